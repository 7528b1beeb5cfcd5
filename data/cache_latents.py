"""Write a latent cache: the frozen VAE (and a frozen text encoder) run once over `data.shards`.

    python data/cache_latents.py data.shards='shards/*.tar' data.latent_cache=cache/ vae=causal3d vae.ckpt=vae.ckpt
    python train.py             data.latent_cache=cache/ vae=causal3d vae.ckpt=vae.ckpt     # no decoding

Takes the same config and overrides as train.py (buckets, frames, size, VAE, text encoder); writes
`data.latent_cache`/latents-NNNNNN.tar and cache_info.json. See sora/data/latent_cache.py for the format.
A bad setting or input ends in one line `error: ...` (exit status 2); a run that fails leaves no partial shards.
"""

import json
import logging
import sys
from pathlib import Path

import hydra
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from sora.config import register_schemas
from sora.config.overrides import one_line_override_errors
from sora.errors import SoraError, exit_on_user_error

log = logging.getLogger("sora.cache_latents")
register_schemas()


@one_line_override_errors(Path(__file__).resolve().parents[1] / "configs", "train")
@hydra.main(version_base=None, config_path="../configs", config_name="train")
@exit_on_user_error
def main(cfg) -> None:
    from sora.config import check_against_vae, check_train_config
    from sora.data.latent_cache import write_latent_cache
    from sora.diffusion.frame_modes import gives_frames
    from sora.inference.bundle import vae_from_config
    from sora.models.geometry import LatentGeometry
    from sora.models.text import build_text_encoder

    check_train_config(cfg)
    if not cfg.data.latent_cache:
        raise SoraError("set data.latent_cache=DIR: where the cache is written (and later read by train.py)")
    out = Path(cfg.data.latent_cache).absolute()
    there = next(q for q in (out, *out.parents) if q.exists())  # the folder itself, or where it would be made
    if not there.is_dir():
        raise SoraError(f"data.latent_cache={cfg.data.latent_cache!r} cannot be a folder: {there} is a file")
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    vae, cfg = vae_from_config(cfg)  # the VAE and text encoder exactly as train.py builds them (vae.ckpt, text.path)
    geometry = LatentGeometry.of(vae, cfg.dit.patch_size)
    check_against_vae(cfg, geometry)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    had_cache = any(out.glob("latents-*.tar"))  # then write_latent_cache refuses, and leaves it as it is
    try:
        info = write_latent_cache(cfg, vae, build_text_encoder(cfg.text), geometry, cfg.data.latent_cache, device,
                                  frames_alone=gives_frames(cfg.conditioning.modes))
    except BaseException:
        if not had_cache:  # the shards of a failed run: a rerun would take them for a cache and refuse to write
            for partial in out.glob("latents-*.tar"):
                partial.unlink()
        raise
    print(json.dumps(info, indent=1), flush=True)
    log.info("wrote %d samples to %s", info["num_samples"], cfg.data.latent_cache)


if __name__ == "__main__":
    main()
