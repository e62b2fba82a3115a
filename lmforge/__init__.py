"""lmforge: pre-train, fine-tune, prompt, distil and compress Transformer language models."""
__version__ = "0.1.0"
