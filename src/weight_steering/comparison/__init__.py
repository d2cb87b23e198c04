"""Is weight steering better than prompting and activation steering at the same KL budget? Every method of the
registry calibrated per sign to one p95 KL, scored in and out of distribution, then summarised over seeds."""

from .methods import COMPARISON_METHODS, MethodContext, register_method
from .render import render_comparison, render_seed_comparison
from .run import CompareConfig, CompareError, run_comparison
from .seeds import SeedSummaryError, load_comparisons, summarize_seeds

__all__ = ["COMPARISON_METHODS", "CompareConfig", "CompareError", "MethodContext", "SeedSummaryError", "load_comparisons",
           "register_method", "render_comparison", "render_seed_comparison", "run_comparison", "summarize_seeds"]
