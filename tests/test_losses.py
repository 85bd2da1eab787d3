"""Objectives, penalties and DiffAugment against values worked out by hand."""
import math

import pytest
import torch
from torch import nn

from celebgan.gan import augment, losses
from celebgan.gan.penalties import R1, R2, GradientPenalty


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


REAL, FAKE = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])


def test_bce_discriminator_loss_by_hand():
    # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
    expected = (softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-3)) / 2
    assert losses.d_bce(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_target_by_hand():
    real, fake = torch.tensor([2.0]), torch.tensor([0.0])
    # BCE with target t: -(t log s(r) + (1 - t) log(1 - s(r)))
    expected = 0.9 * softplus(-2) + 0.1 * softplus(2) + softplus(0)
    assert losses.d_bce(real, fake, real_label=0.9).item() == pytest.approx(expected, rel=1e-6)
    # One-sided: the smoothed loss is not minimised by an ever larger real logit.
    assert losses.d_bce(torch.tensor([20.0]), fake, real_label=0.9) > \
        losses.d_bce(torch.tensor([math.log(9.0)]), fake, real_label=0.9)


def test_generator_losses_by_hand():
    fake = torch.tensor([-2.0, 1.0])
    assert losses.g_nonsaturating(fake).item() == pytest.approx((softplus(2) + softplus(-1)) / 2, rel=1e-6)
    # minimax: mean log(1 - sigmoid(f)) = -mean softplus(f)
    assert losses.g_minimax(fake).item() == pytest.approx(-(softplus(-2) + softplus(1)) / 2, rel=1e-6)
    assert losses.g_lsgan(fake).item() == pytest.approx(0.5 * ((-3) ** 2 + 0 ** 2) / 2)
    assert losses.g_wgan(fake).item() == pytest.approx(0.5)
    assert losses.g_hinge(fake).item() == pytest.approx(0.5)


def test_minimax_saturates_where_non_saturating_does_not():
    # A confidently rejected fake (logit -10): the minimax gradient all but vanishes.
    fake = torch.tensor([-10.0], requires_grad=True)
    (g_mm,) = torch.autograd.grad(losses.g_minimax(fake), fake)
    (g_ns,) = torch.autograd.grad(losses.g_nonsaturating(fake), fake)
    assert abs(g_mm.item()) < 1e-4 and abs(g_ns.item()) > 0.99


def test_discriminator_losses_by_hand():
    assert losses.d_lsgan(REAL, FAKE).item() == pytest.approx(0.5 * ((1 + 4) / 2 + (0.25 + 9) / 2))
    assert losses.d_wgan(REAL, FAKE).item() == pytest.approx((0.5 - 3) / 2 - (2 - 1) / 2)
    # hinge: mean relu(1 - r) + mean relu(1 + f) = (0 + 2)/2 + (1.5 + 0)/2
    assert losses.d_hinge(REAL, FAKE).item() == pytest.approx(1.0 + 0.75)


def test_relativistic_pairing_by_hand():
    # D: mean softplus(f_i - r_i); G: mean softplus(r_i - f_i), pairs by position.
    assert losses.d_rpgan(REAL, FAKE).item() == pytest.approx((softplus(-1.5) + softplus(-2)) / 2, rel=1e-6)
    assert losses.g_rpgan(FAKE, real_logits=REAL).item() == pytest.approx((softplus(1.5) + softplus(2)) / 2, rel=1e-6)
    # Shifting every logit by the same amount changes nothing: only the gap counts.
    assert losses.d_rpgan(REAL + 5, FAKE + 5).item() == pytest.approx(losses.d_rpgan(REAL, FAKE).item(), rel=1e-6)


class Linear(nn.Module):
    """D(x) = sum(w * x) per image (+ a square term when curved), whose input gradient is known."""

    def __init__(self, w: torch.Tensor, curved: bool = False):
        super().__init__()
        self.w, self.curved = nn.Parameter(w), curved

    def forward(self, x):
        out = (x * self.w).flatten(1).sum(1)
        return out + (x.square().flatten(1).sum(1) if self.curved else 0)


def test_r1_and_r2_by_hand():
    w = torch.tensor([[[[3.0, 4.0]]]])  # ||w|| = 5
    real, fake = torch.zeros(2, 1, 1, 2), torch.ones(2, 1, 1, 2)
    d = Linear(w, curved=True)  # grad_x D = w + 2x: at real = w (norm^2 25), at fake = (5, 6) (norm^2 61)
    assert R1(gamma=0.2)(d, real, fake).item() == pytest.approx(0.1 * 25)
    assert R2(gamma=0.2)(d, real, fake).item() == pytest.approx(0.1 * 61)
    # The penalty trains D: its gradient w.r.t. w is gamma * (w + 2x) for R1 at x = 0.
    (grad_w,) = torch.autograd.grad(R1(gamma=0.2)(d, real, fake), d.w)
    assert torch.allclose(grad_w, 0.2 * w)


def test_wgan_gradient_penalty_by_hand():
    d = Linear(torch.tensor([[[[3.0, 4.0]]]]))  # gradient norm 5 everywhere: (5 - 1)^2 = 16
    real, fake = torch.randn(4, 1, 1, 2), torch.randn(4, 1, 1, 2)
    assert GradientPenalty(weight=10.0)(d, real, fake).item() == pytest.approx(160.0)
    unit = Linear(torch.tensor([[[[0.6, 0.8]]]]))  # already 1-Lipschitz: no penalty
    assert GradientPenalty()(unit, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="every=0"):
        R1(every=0)


def test_translation_moves_content_by_whole_pixels_and_fills_zeros():
    x = torch.arange(1, 1 + 2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    torch.manual_seed(0)
    out = augment.translation(x, ratio=0.25)  # shifts of up to 2 pixels
    for img, src in zip(out, x):
        hits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if torch.equal(img[0], torch.roll(src[0], (-dy, -dx), (0, 1)) * shifted_mask(dy, dx))]
        assert len(hits) == 1  # exactly one integer shift explains the image


def shifted_mask(dy: int, dx: int) -> torch.Tensor:
    """1 where pixel (i + dy, j + dx) lies inside an 8x8 image, else 0."""
    rows = (torch.arange(8) + dy).clamp(-1, 8)
    cols = (torch.arange(8) + dx).clamp(-1, 8)
    return (((rows >= 0) & (rows < 8))[:, None] & ((cols >= 0) & (cols < 8))[None, :]).float()


def test_cutout_zeroes_one_square_of_the_ratio():
    torch.manual_seed(0)
    x = torch.ones(64, 3, 16, 16)
    out = augment.cutout(x, ratio=0.5)
    zeros = (out == 0).all(1).flatten(1).sum(1)  # per image, all channels cut together
    assert ((out == 0) | (out == 1)).all()
    assert zeros.max() == 64 and zeros.min() >= 16  # an 8x8 square, clipped at the border
    assert (zeros < 64).any()  # some squares do hang over the edge


def test_color_changes_images_per_sample_and_keeps_gradients():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 4, 4, requires_grad=True)
    out = augment.DiffAugment("color,translation,cutout")(x)
    assert out.shape == x.shape
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().sum() > 0  # G learns through the augmentation
    ratios = [(out[i] - x[i]).abs().mean().item() for i in range(8)]
    assert len({round(r, 6) for r in ratios}) == 8  # each image its own draws


def test_diffaugment_policy_parsing():
    assert not augment.DiffAugment("")
    assert augment.DiffAugment(" color, cutout ").ops == ["color", "cutout"]
    with pytest.raises(ValueError, match="unknown DiffAugment op"):
        augment.DiffAugment("color,flip")


def test_r1_through_diffaugment_double_backward():
    # R1 differentiates D's input gradient once more: every augmentation op must support that.
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    policy = augment.DiffAugment("color,translation,cutout")
    penalty = R1(gamma=1.0)(lambda x: conv(policy(x)).square().flatten(1).sum(1), torch.randn(4, 3, 8, 8), None)
    (grad,) = torch.autograd.grad(penalty, conv.weight)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
