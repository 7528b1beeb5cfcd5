import pytest
import torch

from sora.models.discriminator import PatchDiscriminator3D, adaptive_weight, hinge_d_loss, hinge_g_loss


@pytest.mark.parametrize("num_frames", [1, 9])
def test_one_logit_per_space_time_patch(num_frames):
    disc = PatchDiscriminator3D(base_channels=8, num_layers=3)
    logits = disc(torch.randn(2, 3, num_frames, 48, 64))
    # time kept; h, w / 2^3 then -1 by each of the two stride-1 convs
    assert logits.shape == (2, 1, num_frames, 4, 6)


def test_vqgan_init_and_widths():
    torch.manual_seed(0)
    disc = PatchDiscriminator3D(base_channels=16, num_layers=3)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128, 1]
    assert [c.stride for c in convs] == [(1, 2, 2)] * 3 + [(1, 1, 1)] * 2
    big = convs[3].weight
    assert abs(big.std().item() - 0.02) < 1e-3 and abs(big.mean().item()) < 1e-3
    norms = [m for m in disc.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 3 and all(n.bias.abs().max() == 0 for n in norms)
    assert abs(norms[-1].weight.mean().item() - 1) < 0.01


def test_too_small_input_is_named():
    with pytest.raises(ValueError, match="h, w >= 24"):
        PatchDiscriminator3D(base_channels=8, num_layers=3)(torch.randn(1, 3, 1, 16, 16))


def test_hinge_losses_closed_form():
    real = torch.tensor([2.0, 0.5, -1.0, 0.0])  # relu(1 - r) = 0, 0.5, 2, 1 -> mean 0.875
    fake = torch.tensor([-2.0, -0.5, 1.0, 3.0])  # relu(1 + f) = 0, 0.5, 2, 4 -> mean 1.625
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * (0.875 + 1.625)))
    torch.testing.assert_close(hinge_g_loss(fake), torch.tensor(-0.375))
    # a confident, correct discriminator has zero loss
    assert hinge_d_loss(torch.full((3,), 1.5), torch.full((3,), -1.0)) == 0


def test_adaptive_weight_by_hand():
    w = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)  # the "last layer"
    a, b, c = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0.3, -0.4, 1.2])
    rec = ((w * a - b) ** 2).sum()
    g = -(w * c).sum()
    weight = adaptive_weight(rec, g, w)
    with torch.no_grad():
        grad_rec = 2 * (w * a - b) * a  # d rec / dw
        grad_g = -c  # d g / dw
        expected = grad_rec.norm() / (grad_g.norm() + 1e-4)
    torch.testing.assert_close(weight, expected)
    assert not weight.requires_grad
    # the graphs survive for the backward pass that follows
    (rec + weight * g).backward()
    torch.testing.assert_close(w.grad, grad_rec + weight * grad_g)


def test_adaptive_weight_is_clamped():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    rec = (w ** 2).sum() * 1e3
    g = (w * 0).sum()  # no gradient at all: the ratio would be ||grad rec|| / 1e-4
    assert adaptive_weight(rec, g, w, max_weight=50.0) == 50.0


def test_discriminator_separates_two_distributions():
    torch.manual_seed(0)
    disc = PatchDiscriminator3D(base_channels=8, num_layers=2)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.9))

    def real(n):  # flat-coloured clips, the same colour in every frame
        return torch.rand(n, 3, 1, 1, 1).mul(2).sub(1).expand(n, 3, 3, 16, 16).clone()

    def fake(n):  # i.i.d. noise of the same range
        return torch.rand(n, 3, 3, 16, 16).mul(2).sub(1)

    with torch.no_grad():
        before = hinge_d_loss(disc(real(16)), disc(fake(16))).item()
    for _ in range(50):
        loss = hinge_d_loss(disc(real(8)), disc(fake(8)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        lr, lf = disc(real(16)), disc(fake(16))
    assert before > 0.8  # chance: logits near 0 give a loss near 1
    assert hinge_d_loss(lr, lf) < 0.2
    assert (lr.mean(dim=(1, 2, 3, 4)) > lf.mean(dim=(1, 2, 3, 4)).max()).all()  # every real clip above every fake
