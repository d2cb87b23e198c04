"""weight-steering: steer language models with weight arithmetic (Fierro & Roger 2025, arXiv 2511.05408).

Five lines in a notebook::

    import weight_steering as ws
    model, tokenizer = ws.load_model()                       # embedded SmolLM2-135M-Instruct
    dw = ws.train_dw(model, tokenizer, "tone", ws.preset_config("smoke"))   # persona data → θ⁺, θ⁻ → dW
    with ws.steer(model, dw, alpha=1.0):
        print(ws.generate_text(model, tokenizer, "Write a short note to my landlord about the broken heater."))

The package is laid out by concept: ``core`` (behaviours, models and chat templates, persona data, the judge, adapter
training, dW, steering and the :class:`SteeringMethod` protocol), ``evaluation`` (rows, scoring, calibration, effects,
SI, statistics), ``main_job`` (the pipeline that composes them), and one folder per study, each holding its run, its
statistics over seeds and its rendering: ``comparison`` (iso-KL comparison of methods), ``ablation``, ``hypotheses``,
``monitoring``, ``vignettes``, ``degradation``, ``sweep``. The names below are the core API; each study's API is
under its own name (``ws.comparison.run_comparison``, ``ws.sweep.run_sweep``, …).
"""

from . import ablation, comparison, degradation, evaluation, export, hypotheses, monitoring, sweep, vignettes
from .comparison.methods import register_method
from .core.activations import activation_method
from .core.adapters import ADAPTER_FAMILIES, TrainConfig
from .core.behavior_files import load_behavior
from .core.behaviors import Behavior
from .core.chat import generate_text
from .core.diff import DeltaWeights, load_dw, save_dw
from .core.methods import SteeringMethod, engineered_method, persona_method, prompt_method, weight_method
from .core.models import DEFAULT_MODEL, load_model
from .core.steer import steer
from .evaluation.calibrate import calibrate_alpha, kl_from_base
from .evaluation.scoring import evaluate
from .export import export_dw, load_exported
from .main_job import RunConfig, preset_config, run_main_job, train_dw

__all__ = [
    "ADAPTER_FAMILIES", "Behavior", "DEFAULT_MODEL", "DeltaWeights", "RunConfig", "SteeringMethod", "TrainConfig",
    "activation_method", "calibrate_alpha", "engineered_method", "evaluate", "export_dw", "generate_text", "kl_from_base",
    "load_behavior", "load_dw", "load_exported", "load_model", "persona_method", "preset_config", "prompt_method",
    "register_method", "run_main_job", "save_dw", "steer", "train_dw", "weight_method",
    "ablation", "comparison", "degradation", "evaluation", "export", "hypotheses", "monitoring", "sweep", "vignettes",
]
