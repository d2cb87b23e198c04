"""The main job: persona data → θ⁺, θ⁻ → dW → evaluation over α → report, every step a resumable stage."""

from .config import PRESETS, RunConfig, preset_config
from .run import run_main_job
from .stages import Job, dw_stage, prepare_job, train_dw

__all__ = ["PRESETS", "Job", "RunConfig", "dw_stage", "prepare_job", "preset_config", "run_main_job", "train_dw"]
