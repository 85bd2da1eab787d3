import math

import pytest
import torch

from celebgan.losses import OBJECTIVES, d_bce, d_hinge, g_hinge, g_nonsaturating


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_bce_discriminator_loss_by_hand():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
    expected = (softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-3)) / 2
    assert d_bce(real, fake).item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_target_by_hand():
    real, fake = torch.tensor([2.0]), torch.tensor([0.0])
    t = 0.9
    # BCE with target t: -(t log s(r) + (1 - t) log(1 - s(r)))
    expected = t * softplus(-2) + (1 - t) * softplus(2) + softplus(0)
    assert d_bce(real, fake, real_target=0.9).item() == pytest.approx(expected, rel=1e-6)
    # One-sided: the smoothed loss is not minimised by an ever larger real logit.
    big = torch.tensor([20.0])
    assert d_bce(big, fake, 0.9) > d_bce(torch.tensor([math.log(9.0)]), fake, 0.9)


def test_non_saturating_generator_loss_by_hand():
    fake = torch.tensor([-2.0, 1.0])
    assert g_nonsaturating(fake).item() == pytest.approx((softplus(2) + softplus(-1)) / 2, rel=1e-6)


def test_hinge_by_hand():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-0.5, -2.0])
    assert d_hinge(real, fake).item() == pytest.approx((0.5 + 0) / 2 + (0.5 + 0) / 2)
    assert g_hinge(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_objectives_registry():
    assert OBJECTIVES["bce"] == (d_bce, g_nonsaturating)
    assert OBJECTIVES["hinge"] == (d_hinge, g_hinge)
