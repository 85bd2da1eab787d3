"""Obedience (does a face asked for an attribute show it?), its ceiling, and truncated latents."""
import math

import pytest
import torch

from celebgan.errors import UserError
from celebgan.gan.images import latent_batches, latents, truncate
from celebgan.metrics.obedience import in_model_order, judge_accuracy, matching, obedience

NAMES = ["Smiling", "Eyeglasses"]
JUDGE = ["Bald", "Eyeglasses", "Smiling"]  # the data set's attributes, in another order than the model's


def painter(obeys: set[str]):
    """A generator that paints attribute k into channel k's mean when it obeys that attribute, and
    otherwise paints a function of the latent alone."""
    def generate(z, labels):
        images = torch.zeros(len(z), 3, 4, 4)
        for k, name in enumerate(NAMES):
            value = labels[:, k] if name in obeys else (z[:, k, 0, 0] > 0).float()
            images[:, k] = (2 * value - 1)[:, None, None]
        return images
    return generate


def judge(images):
    """Logits in JUDGE's order: Smiling is read from channel 0, Eyeglasses from channel 1."""
    means = images.mean(dim=(2, 3))
    return torch.stack([torch.full((len(images),), -1.0), means[:, 1], means[:, 0]], dim=1)


def test_a_generator_that_obeys_scores_one_and_one_that_ignores_an_attribute_one_half():
    z = latents(64, 8, seed=0)
    labels = (torch.rand(64, 2, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    result = obedience(painter({"Smiling"}), judge, NAMES, JUDGE, z, labels, batch_size=10)
    smiling, glasses = result["per_attribute"]["Smiling"], result["per_attribute"]["Eyeglasses"]
    assert smiling == {"with": 1.0, "without": 1.0, "balanced": 1.0}
    # The same faces whatever was asked: right exactly as often on one side as wrong on the other.
    assert glasses["with"] + glasses["without"] == pytest.approx(1.0) and glasses["balanced"] == pytest.approx(0.5)
    assert 0.2 < glasses["with"] < 0.8  # the latents' own coin
    assert result["mean"] == pytest.approx(0.75)


def test_the_ceiling_counts_each_side_of_the_real_faces():
    # Labels in the judge's order; the judge sees Smiling right on every face, Eyeglasses never says yes.
    labels = torch.tensor([[0, 1, 1], [0, 0, 1], [1, 0, 0], [0, 1, 0]])
    images = torch.zeros(4, 3, 4, 4)
    images[:, 0] = (2 * labels[:, 2].float() - 1)[:, None, None]
    images[:, 1] = -1.0
    batches = [(images[:3], labels[:3]), (images[3:], labels[3:])]
    result = judge_accuracy(judge, batches, NAMES, JUDGE)
    assert result["per_attribute"]["Smiling"] == {"with": 1.0, "without": 1.0, "balanced": 1.0}
    assert result["per_attribute"]["Eyeglasses"] == {"with": 0.0, "without": 1.0, "balanced": 0.5}
    # An attribute no face has has no "with" share, and no balanced accuracy.
    none = judge_accuracy(judge, [(images[2:3], labels[2:3])], NAMES, JUDGE)
    assert none["per_attribute"]["Smiling"]["with"] is None and none["per_attribute"]["Smiling"]["balanced"] is None
    assert none["mean"] is None


def test_a_judge_of_another_data_set_is_a_clear_error():
    with pytest.raises(UserError, match="Wings"):
        obedience(painter(set()), judge, ["Wings"], JUDGE, latents(2, 8, 0), torch.zeros(2, 1))


def test_condition_sets_select_real_faces_and_become_the_generated_faces_conditions():
    labels = torch.tensor([[0, 1, 1], [0, 0, 1], [1, 1, 0]])
    assert matching(labels, JUDGE, {"Smiling": 1}).tolist() == [True, True, False]
    assert matching(labels, JUDGE, {"Smiling": 1, "Eyeglasses": 0}).tolist() == [False, True, False]
    assert in_model_order(labels, JUDGE, NAMES).tolist() == [[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("threshold", [0.5, 0.7, 2.0])
def test_truncated_latents_stay_within_the_threshold_and_keep_their_order(threshold):
    plain, z = latents(4000, 16, seed=3), latents(4000, 16, seed=3, truncation=threshold)
    assert z.abs().max() <= threshold and (plain.abs() > threshold).any()
    # Each draw moves to its own quantile of the truncated normal: same signs, same order.
    assert torch.equal(torch.sign(z), torch.sign(plain))
    in_order = z.flatten()[plain.flatten().argsort()]
    assert (in_order.diff() >= 0).all()
    # The truncated normal's variance: 1 - 2 t phi(t) / (2 Phi(t) - 1).
    phi = math.exp(-threshold ** 2 / 2) / math.sqrt(2 * math.pi)
    variance = 1 - 2 * threshold * phi / math.erf(threshold / math.sqrt(2))
    assert z.var().item() == pytest.approx(variance, rel=0.05)


def test_truncation_off_changes_nothing_and_batches_equal_one_call():
    assert torch.equal(latents(40, 8, seed=1, truncation=None), latents(40, 8, seed=1))
    whole = latents(40, 8, seed=1, truncation=0.7)
    assert torch.equal(torch.cat(list(latent_batches(40, 8, 1, 16, truncation=0.7))), whole)


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), "high", True])
def test_a_bad_truncation_is_a_clear_error(bad):
    with pytest.raises(UserError, match="truncation"):
        truncate(torch.zeros(2, 4, 1, 1), bad)
