"""sora: a research framework for training Sora-style video diffusion transformers."""

__version__ = "0.1.0"
