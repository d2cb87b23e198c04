"""Moral-foundation vignettes and surgical informedness (SI) of a steered model."""

from .run import run_vignettes, vignette_intents

__all__ = ["run_vignettes", "vignette_intents"]
