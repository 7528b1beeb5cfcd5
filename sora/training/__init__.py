"""Training with Lightning: the tasks that wrap a model bundle or a VAE, callbacks, optimizers, resume. Nothing in
sora/ imports this package; only train.py does."""
