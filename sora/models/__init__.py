"""Networks and their shapes: the DiT and its layers, VAEs, text encoders, the conditioning object, latent geometry."""
