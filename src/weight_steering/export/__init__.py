"""Take a dW elsewhere: as a PEFT LoRA adapter (exact, or truncated by rank or energy, with the error stated) or as a
llama.cpp GGUF LoRA adapter, and load it back."""

from .convert import export_dw, load_exported

__all__ = ["export_dw", "load_exported"]
