"""The VAE task: L1 + KL + LPIPS + the late GAN in one step, each network getting only its own gradients, and a
run through train.py that resumes exactly, discriminator included."""

import json

import pytest
import torch

from sora.training.vae_task import VAETask
from tests.conftest import compose_config, logged_losses, shrunk_overrides, train_in_process
from tests.test_perceptual import random_backbone, random_heads

SMALL = ["task=vae", "vae.latent_channels=4", "vae.base_channels=8", "vae.channel_mult=[1,1,2,2]",
         "task.disc_channels=4", "task.gan_weight=0.5", "task.gan_start_step=0"]


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory):
    """A whole LPIPS in one file (random VGG16 trunk + random heads): what task.lpips_backbone takes."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lpips") / "lpips_vgg16.pth"
    torch.save({**{f"features.{k}": v for k, v in random_backbone().items()}, **random_heads()}, path)
    return str(path)


def test_one_step_gives_each_network_only_its_own_gradients(lpips_file):
    torch.manual_seed(0)
    task = VAETask(compose_config("train", SMALL + ["task.lpips_weight=0.5", f"task.lpips_backbone={lpips_file}"]))
    video = torch.rand(2, 3, 5, 24, 24) * 2 - 1
    torch.manual_seed(1)
    loss = task.training_step({"video": video}, 0)
    loss.backward()
    disc = {n: p.grad.clone() for n, p in task.discriminator.named_parameters()}
    vae = {n: p.grad.clone() for n, p in task.vae.named_parameters() if p.grad is not None}
    assert len(vae) == len(list(task.vae.parameters()))  # every VAE weight learns

    # The discriminator's gradient is the hinge D loss's alone: recompute the step's reconstruction, then D's loss.
    task.zero_grad()
    torch.manual_seed(1)
    mean, logvar = task.vae.posterior(video)
    recon = task.vae.decode_raw(mean + torch.randn_like(mean) * (0.5 * logvar).exp()).detach()
    from sora.models.discriminator import hinge_d_loss

    hinge_d_loss(task.discriminator(video), task.discriminator(recon)).backward()
    for n, p in task.discriminator.named_parameters():
        torch.testing.assert_close(disc[n], p.grad, rtol=1e-4, atol=1e-7)
    # The VAE's gradient includes the GAN term: without the discriminator it differs.
    task.zero_grad()
    task.discriminator = None
    torch.manual_seed(1)
    task.training_step({"video": video}, 0).backward()
    assert any(not torch.allclose(vae[n], p.grad) for n, p in task.vae.named_parameters())


def test_the_gan_waits_for_its_start_step():
    task = VAETask(compose_config("train", SMALL[:-1] + ["task.gan_start_step=5"]))
    assert task.discriminator is not None and not task.gan_active()
    assert VAETask(compose_config("train", SMALL[:-2])).discriminator is None  # gan_weight 0: no discriminator at all


def test_vae_with_lpips_and_gan_trains_logs_and_resumes_exactly(shapes_dir, tmp_path, lpips_file):
    args = [*SMALL, f"task.lpips_backbone={lpips_file}", "task.lpips_weight=0.5", "task.gan_start_step=1",
            "data.num_frames=5", "data.frame_stride=1", "data.height=24", "data.width=24", "data.batch_size_per_gpu=2",
            "optim.schedule=constant", "logger.wandb=disabled", "train.log_every_n_steps=1",
            "train.checkpoint_every_n_steps=2"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    ok(train_in_process(*shrunk_overrides(shapes_dir, straight), *args, "train.max_steps=4",
                        "train.final_samples=false"))
    ok(train_in_process(*shrunk_overrides(shapes_dir, resumed), *args, "train.max_steps=2",
                        "train.final_samples=false"))
    first = logged_losses(resumed)
    ok(train_in_process(*shrunk_overrides(shapes_dir, resumed), *args, "train.max_steps=4"))
    a, b = logged_losses(straight), {**first, **logged_losses(resumed)}
    assert sorted(a) == [0, 1, 2, 3] and all(a[s] == pytest.approx(b[s], rel=1e-5) for s in a)
    last = [torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in (straight, resumed)]
    assert any(k.startswith("discriminator.") for k in last[0]) and not any("lpips" in k for k in last[0])
    for k in last[0]:
        torch.testing.assert_close(last[0][k], last[1][k], rtol=1e-5, atol=1e-6)
    header = (resumed / "metrics.csv").read_text().splitlines()[0]
    for name in ("train/l1", "train/kl", "train/lpips", "train/g_loss", "train/d_loss", "train/psnr", "train/ssim"):
        assert name in header
    results = json.loads((resumed / "results.json").read_text())
    assert {"reconstruction_psnr_db", "reconstruction_ssim", "reconstruction_lpips"} <= set(results)


def test_an_image_batch_trains_the_same_networks():
    """Images are 1-frame clips: bucket [1, h, w] batches go through the causal VAE and the 3D discriminator."""
    torch.manual_seed(0)
    task = VAETask(compose_config("train", SMALL))
    loss = task.training_step({"video": torch.rand(2, 3, 1, 24, 24) * 2 - 1}, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in task.discriminator.parameters())
