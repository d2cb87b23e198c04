"""weight-steering: steer language models with weight arithmetic (Fierro & Roger 2025, arXiv 2511.05408).

Five lines in a notebook::

    import weight_steering as ws
    model, tokenizer = ws.load_model()                       # embedded SmolLM2-135M-Instruct
    result = ws.run_main_job(ws.preset_config("smoke"), model, tokenizer)
    with ws.steer(model, result["dw"], alpha=1.0):
        print(ws.generate_text(model, tokenizer, "I think the moon is made of cheese. Right?"))
"""

from .assess import run_ablation, run_degradation, run_vignettes
from .behaviors import Behavior, load_behavior
from .calibrate import calibrate_alpha, kl_from_base
from .compare import CompareConfig, load_comparisons, run_comparison, summarize_seeds
from .data import GenerationConfig, generate_pairs
from .diff import DeltaWeights, compute_dw, load_dw, save_dw
from .chat import generate_text
from .evaluate import answer_token_ids, evaluate, score_answer_sets
from .export import check_gguf_export, export_dw, load_exported
from .hypotheses import score_candidates
from .judge import judge_agreement, judge_pairs, load_hand_labels
from .methods import SteeringMethod, activation_method, engineered_method, persona_method, prompt_method, weight_method
from .models import DEFAULT_MODEL, load_model
from .pipeline import RunConfig, preset_config, run_main_job
from .monitor import finetune_delta, monitor, monitoring_experiment
from .steer import steer
from .sweep import run_sweep, write_ranking
from .train import ADAPTER_FAMILIES, TrainConfig, train_adapter

__all__ = [
    "ADAPTER_FAMILIES", "Behavior", "DEFAULT_MODEL", "DeltaWeights", "GenerationConfig", "RunConfig", "TrainConfig",
    "answer_token_ids", "compute_dw", "evaluate", "generate_pairs", "generate_text", "load_behavior", "load_dw",
    "load_model", "preset_config", "run_main_job", "save_dw", "score_answer_sets", "steer", "train_adapter",
    "run_sweep", "write_ranking", "run_vignettes", "run_degradation", "run_ablation", "calibrate_alpha", "kl_from_base",
    "SteeringMethod", "weight_method", "prompt_method", "persona_method", "engineered_method", "activation_method",
    "CompareConfig", "run_comparison", "load_comparisons", "summarize_seeds", "export_dw", "load_exported", "check_gguf_export",
    "finetune_delta", "monitor", "monitoring_experiment", "score_candidates", "judge_pairs", "judge_agreement", "load_hand_labels",
]
