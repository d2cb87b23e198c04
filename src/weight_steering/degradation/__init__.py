"""What steering costs the model: the neutral reference answers' NLL and KL(steered ‖ base) per α."""

from .run import run_degradation

__all__ = ["run_degradation"]
