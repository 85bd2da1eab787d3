"""Obedience (does a face asked for an attribute show it?), its ceiling, and truncated latents."""
import logging
import math

import pytest
import torch

from celebgan.errors import UserError
from celebgan.gan.images import latent_batches, latents, truncate
from celebgan.gan.labels import LabelTable, draw_rows
from celebgan.metrics.obedience import consistent_obedience, in_model_order, judge_accuracy, matching, obedience

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


# A label table of the shape of the synthetic faces' hair: every face one hair colour or bald, never two.
HAIR = ["Bald", "Black_Hair", "Blond_Hair", "Smiling"]


def hair_labels(n: int = 400, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    style = torch.randint(0, 3, (n,), generator=g)  # 0 bald, 1 black, 2 blond
    labels = torch.zeros(n, 4)
    labels[torch.arange(n), style] = 1.0
    labels[:, 3] = (torch.rand(n, generator=g) < 0.5).float()
    return labels


def rows_of(table: LabelTable) -> set[tuple[int, ...]]:
    return {tuple(r) for r in table.rows.tolist()}


def test_a_request_draws_the_others_only_from_rows_the_data_holds():
    table = LabelTable.from_labels(hair_labels())
    assert table.total == 400 and len(table.rows) == 6  # 3 styles x smiling or not
    drawn = draw_rows(table, HAIR, torch.full((4,), 0.5), 500, {"Blond_Hair": 1.0}, torch.Generator().manual_seed(0))
    assert (drawn[:, 2] == 1).all() and (drawn[:, :2] == 0).all()  # a blond face is neither bald nor black-haired
    assert {tuple(r) for r in drawn.long().tolist()} <= rows_of(table)
    assert 0.35 < drawn[:, 3].mean() < 0.65  # the rest as the data has it
    # Independent draws (no table: today's fallback) ask for combinations the data never holds.
    loose = draw_rows(None, HAIR, torch.full((4,), 0.5), 500, {"Blond_Hair": 1.0}, torch.Generator().manual_seed(0))
    assert not {tuple(r) for r in loose.long().tolist()} <= rows_of(table)


def test_an_impossible_request_is_one_warning_saying_how_often_the_data_holds_it(caplog):
    table = LabelTable.from_labels(hair_labels())
    with caplog.at_level(logging.WARNING, logger="celebgan.gan.labels"):
        drawn = draw_rows(table, HAIR, torch.full((4,), 0.5), 8, {"Black_Hair": 1.0, "Blond_Hair": 1.0},
                          torch.Generator().manual_seed(0))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    black, blond = table.faces_with({1: 1}), table.faces_with({2: 1})
    assert "Black_Hair: 1, Blond_Hair: 1" in warnings[0] and "0 of 400" in warnings[0]
    assert f"Black_Hair: {black}" in warnings[0] and f"Blond_Hair: {blond}" in warnings[0]
    assert (drawn[:, 1:3] == 1).all()  # still asked as the user asked
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="celebgan.gan.labels"):
        draw_rows(table, HAIR, torch.full((4,), 0.5), 8, {"Black_Hair": 1.0, "Smiling": 1.0}, None)
    assert not caplog.records  # a combination the data holds says nothing
    # One the data holds on fewer than 1 face in 1,000 is drawn from those rows, with a warning naming its count.
    rare = LabelTable.from_labels(torch.cat([hair_labels(2000), torch.tensor([[0.0, 1.0, 1.0, 0.0]])]))
    with caplog.at_level(logging.WARNING, logger="celebgan.gan.labels"):
        drawn = draw_rows(rare, HAIR, torch.full((4,), 0.5), 8, {"Black_Hair": 1.0, "Blond_Hair": 1.0}, None)
    assert drawn.tolist() == [[0.0, 1.0, 1.0, 0.0]] * 8
    assert "only 1 of 2,001" in caplog.records[-1].getMessage()


def test_switching_a_hair_colour_on_switches_the_others_off_as_the_table_says():
    table = LabelTable.from_labels(hair_labels())
    assert table.exclusive(2) == [0, 1] and table.exclusive(3) == []  # from the counts, not a list of names
    base = torch.tensor([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 1, 1]], dtype=torch.float)
    on = table.switched(base, 2, 1.0)
    assert on.tolist() == [[0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 1, 1]]
    # Switched off, a blond face becomes the nearest row the data holds: bald or black-haired, still smiling.
    off = table.switched(base, 2, 0.0)
    assert off[:2].tolist() == base[:2].tolist() and off[2, 2] == 0 and off[2, 3] == 1 and off[2, :2].sum() == 1
    assert {tuple(r) for r in torch.cat([on, off]).long().tolist()} <= rows_of(table)


def test_the_table_is_plain_data_and_a_damaged_one_a_clear_error():
    plain = LabelTable.from_labels(hair_labels()).to_plain()
    assert plain["rows"].dtype == torch.uint8 and plain["counts"].dtype == torch.int64
    assert LabelTable.from_plain(plain, 4).total == 400
    with pytest.raises(UserError, match="label table"):
        LabelTable.from_plain({"rows": plain["rows"][:, :3], "counts": plain["counts"]}, 4)
    with pytest.raises(UserError, match="label table"):
        LabelTable.from_plain({"rows": plain["rows"] * 2, "counts": plain["counts"]}, 4)


def test_consistent_requests_score_a_generator_that_obeys_only_rows_it_saw_higher_than_independent_ones():
    table = LabelTable.from_labels(hair_labels())
    seen = rows_of(table)
    names = HAIR

    def generate(z, labels):  # paints the asked attributes on a row the data holds, noise on any other
        images = torch.zeros(len(z), 4, 2, 2)
        for i, row in enumerate(labels.long().tolist()):
            value = torch.tensor(row).float() if tuple(row) in seen else (z[i, :4, 0, 0] > 0).float()
            images[i] = (2 * value - 1)[:, None, None]
        return images

    def classify(images):
        return images.mean(dim=(2, 3))
    z = latents(200, 8, seed=0)

    def asked(column, value):
        return table.draw(len(z), {column: value}, torch.Generator().manual_seed(column + 10 * int(value)))
    consistent = consistent_obedience(generate, classify, names, names, z, asked)
    independent = obedience(generate, classify, names, names, z,
                            draw_rows(None, names, table.rows.float().mean(0), len(z), None,
                                      torch.Generator().manual_seed(1)))
    assert consistent["mean"] == pytest.approx(1.0)
    assert independent["mean"] < 0.85
    blond = [scores["per_attribute"]["Blond_Hair"]["balanced"] for scores in (consistent, independent)]
    assert blond[0] > blond[1]
    # An attribute no face lacks (or has) has no balanced accuracy, not a made-up one.
    only = LabelTable.from_labels(torch.ones(5, 4))
    none = consistent_obedience(generate, classify, names, names, z[:4],
                                lambda c, v: only.draw(4, {c: v}, None))
    assert none["per_attribute"]["Smiling"]["without"] is None and none["mean"] is None


def test_the_judge_weighs_rare_attributes_up_and_its_cache_key_follows_its_recipe(monkeypatch):
    import celebgan.metrics.judge as attributes

    labels = torch.tensor([[1, 0], [0, 1], [0, 1], [0, 1]])
    assert attributes.positive_weights(labels).tolist() == [3.0, pytest.approx(1 / 3)]
    # Balanced accuracy: always answering "no" to a 1-in-4 attribute scores 0.5, not 0.75.
    accuracy, balanced = attributes.balanced_accuracy(torch.full((4, 2), -1.0), labels)
    assert accuracy.tolist() == [0.75, 0.25] and balanced.tolist() == [0.5, 0.5]
    data = {"_target_": "celebgan.data.modules.SyntheticDataModule", "img_size": 16}
    settings = {"max_train": 8, "epochs": 1}
    key = attributes.fingerprint(data, settings)
    assert attributes.fingerprint(data, {**settings, "epochs": 2}) != key
    monkeypatch.setattr(attributes, "RECIPE_VERSION", attributes.RECIPE_VERSION + 1)
    assert attributes.fingerprint(data, settings) != key  # a new recipe never reads an old judge back
