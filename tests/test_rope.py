import torch

from sora.models.rope import apply_rope, axis_dims, grid_positions, rope_angles


def rotate(x, positions, head_dim=24):
    angles = rope_angles(positions, head_dim)
    return apply_rope(x, torch.polar(torch.ones_like(angles), angles))


def test_axis_split_is_even_and_complete():
    for head_dim in (6, 24, 32, 64, 72, 128):
        dims = axis_dims(head_dim)
        assert sum(dims) == head_dim and all(d % 2 == 0 and d > 0 for d in dims)


def test_rotation_preserves_norm_and_position_zero_is_identity():
    x = torch.randn(1, 2, 5, 24)
    pos = torch.tensor([[0, 0, 0], [1, 2, 3], [4, 0, 7], [2, 2, 2], [9, 9, 9]])
    y = rotate(x, pos)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])


def test_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 24), torch.randn(1, 1, 1, 24)

    def score(pq, pk):
        return (rotate(q, torch.tensor([pq])) * rotate(k, torch.tensor([pk]))).sum().item()

    base = score([1, 2, 3], [0, 1, 1])
    shifted = score([5, 7, 4], [4, 6, 2])  # the same offset (1, 1, 2) elsewhere in the grid
    assert abs(base - shifted) < 1e-4
    assert abs(base - score([1, 2, 3], [0, 1, 2])) > 1e-3  # another offset gives another score


def test_each_axis_moves_its_own_channels():
    d_t, d_h, d_w = axis_dims(24)
    a = rope_angles(torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]), 24)
    assert a[1, : d_t // 2].abs().sum() > 0 and a[1, d_t // 2 :].abs().sum() == 0
    assert a[2, d_t // 2 : (d_t + d_h) // 2].abs().sum() > 0 and a[2, : d_t // 2].abs().sum() == 0
    assert a[3, (d_t + d_h) // 2 :].abs().sum() > 0 and a[3, : (d_t + d_h) // 2].abs().sum() == 0


def test_grid_positions_follow_patchify_order():
    pos = grid_positions((2, 3, 4))
    assert pos.shape == (24, 3)
    assert pos[0].tolist() == [0, 0, 0] and pos[1].tolist() == [0, 0, 1] and pos[4].tolist() == [0, 1, 0]
    assert pos[12].tolist() == [1, 0, 0]
