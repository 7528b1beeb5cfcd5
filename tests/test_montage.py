"""sora.eval.montage: videos side by side as one PNG."""

import numpy as np
import pytest

from sora.data.video_io import encode_mp4
from sora.errors import SoraError
from sora.eval.montage import main, montage


def test_rows_are_videos_and_frames_sit_left_to_right_scaled():
    a = np.zeros((3, 4, 4, 3), np.uint8)
    a[1] = 200  # the middle frame lit
    b = np.full((1, 4, 4, 3), 50, np.uint8)
    out = montage([a, b], scale=2, gap=1)
    assert out.shape == (2 * (4 * 2 + 1) + 1, 3 * (4 * 2 + 1) + 1, 3)  # 2 rows, 3 columns of 8x8 cells
    cell = lambda r, c: out[1 + r * 9 : 1 + r * 9 + 8, 1 + c * 9 : 1 + c * 9 + 8]
    assert (cell(0, 1) == 200).all() and (cell(0, 0) == 0).all() and (cell(1, 0) == 50).all()
    assert (cell(1, 1) == 96).all()  # a shorter video leaves the background
    with pytest.raises(SoraError):
        montage([])


def test_the_command_writes_a_png(tmp_path):
    from PIL import Image

    (tmp_path / "a.mp4").write_bytes(encode_mp4(np.zeros((2, 8, 8, 3), np.uint8), 4))
    main([str(tmp_path / "m.png"), str(tmp_path / "a.mp4"), "--scale", "1"])
    assert Image.open(tmp_path / "m.png").size == (2 * 10 + 2, 8 + 4)
