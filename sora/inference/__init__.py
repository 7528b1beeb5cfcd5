"""Inference without Lightning: the model bundle (one copy of the weights), checkpoints, the sampling pipeline."""
