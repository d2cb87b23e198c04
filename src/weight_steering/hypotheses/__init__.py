"""Which subspace, built from the base model alone, predicts where dW lives? A registry of candidate subspaces scored
against random nulls, per dW and over seeds."""

from .candidates import CANDIDATES, HypothesisError, candidate, score_candidates
from .run import run_hypotheses
from .seeds import load_hypotheses, summarize_hypotheses

__all__ = ["CANDIDATES", "HypothesisError", "candidate", "load_hypotheses", "run_hypotheses", "score_candidates",
           "summarize_hypotheses"]
