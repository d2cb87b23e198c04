"""Where does dW live? dW restricted to layers, modules and singular directions, each against norm-matched random and
within-dW nulls, and summarised over seeds."""

from .run import run_ablation
from .seeds import load_ablations, summarize_ablation_seeds
from .variants import AblationError, build_variants, iter_variants

__all__ = ["AblationError", "build_variants", "iter_variants", "load_ablations", "run_ablation", "summarize_ablation_seeds"]
