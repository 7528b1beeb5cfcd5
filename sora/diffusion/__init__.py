"""Diffusion: objectives (loss and velocity), timestep schedules, samplers, classifier-free guidance."""
