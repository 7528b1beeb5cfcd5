"""Training with Lightning: the tasks that wrap a model bundle or a VAE, callbacks, optimizers, resume. Nothing in
sora/ imports this package; only train.py does."""

from sora.training.dit_task import DiTTask
from sora.training.vae_task import VAETask

# task.kind -> the task train.py runs (each says how it is built, what it adds and what it reports).
TASKS = {"dit": DiTTask, "vae": VAETask}
