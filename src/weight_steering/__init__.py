"""weight-steering: steer language models with weight arithmetic (Fierro & Roger 2025, arXiv 2511.05408).

Five lines in a notebook::

    import weight_steering as ws
    model, tokenizer = ws.load_model()                       # embedded SmolLM2-135M-Instruct
    dw = ws.train_dw(model, tokenizer, "tone", ws.preset_config("smoke"))   # persona data → θ⁺, θ⁻ → dW
    with ws.steer(model, dw, alpha=1.0):
        print(ws.generate_text(model, tokenizer, "Write a short note to my landlord about the broken heater."))

The names below are the core: models, dW, steering, evaluation and calibration, the steering methods and their
registry. Each study keeps its API under its own module: ``ws.compare`` (iso-KL comparison), ``ws.sweep`` (adapter
families × seeds), ``ws.assess`` (vignettes, degradation, ablation), ``ws.hypotheses``, ``ws.monitor``, ``ws.export``.
"""

from . import assess, compare, eval_data, eval_rows, export, hypotheses, monitor, sweep
from .behaviors import Behavior, load_behavior
from .calibrate import calibrate_alpha, kl_from_base
from .chat import generate_text
from .diff import DeltaWeights, load_dw, save_dw
from .evaluate import evaluate
from .export import export_dw, load_exported
from .methods import SteeringMethod, activation_method, engineered_method, persona_method, prompt_method, register_method, weight_method
from .models import DEFAULT_MODEL, load_model
from .pipeline import RunConfig, preset_config, run_main_job, train_dw
from .steer import steer
from .train import ADAPTER_FAMILIES, TrainConfig

__all__ = [
    "ADAPTER_FAMILIES", "Behavior", "DEFAULT_MODEL", "DeltaWeights", "RunConfig", "SteeringMethod", "TrainConfig",
    "activation_method", "calibrate_alpha", "engineered_method", "evaluate", "export_dw", "generate_text", "kl_from_base",
    "load_behavior", "load_dw", "load_exported", "load_model", "persona_method", "preset_config", "prompt_method",
    "register_method", "run_main_job", "save_dw", "steer", "train_dw", "weight_method",
    "assess", "compare", "eval_data", "eval_rows", "export", "hypotheses", "monitor", "sweep",
]
