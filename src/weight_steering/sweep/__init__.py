"""Which adapter family gives the best dW? Every family × seed as a resumable cell, ranked with seed-level intervals."""

from .cells import Cell, SweepError, plan_cells
from .ranking import rank_families
from .run import run_sweep

__all__ = ["Cell", "SweepError", "plan_cells", "rank_families", "run_sweep"]
