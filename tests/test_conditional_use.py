"""Faces on request: sampling a conditional model with attributes (command and API), the toggle grid,
truncation in the commands, and obedience in celebgan.evaluate and during training."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONDITIONAL, RANDOM_METRICS, train_under_hydra
from events import scalars
from test_evaluate import eval_cfg
from test_sample import pixels, sample_cfg

import celebgan
from celebgan.metrics.judge import Judge
from celebgan.errors import UserError
from celebgan.evaluate import evaluate
from celebgan.gan.images import conditions, latents
from celebgan.gan.module import TABLE_KEY
from celebgan.run.checkpoint import load_gan, real_subset
from celebgan.sample import sample

NAMES = ["Smiling", "Eyeglasses"]  # conftest.CONDITIONAL's
# A judge that trains in a second or two: enough for the plumbing, not for a verdict.
JUDGE = {"max_train": 256, "max_eval": 64, "epochs": 1, "batch_size": 64, "lr": 2e-3, "width": 8}


@pytest.fixture
def cond_ckpt(conditional_ckpt) -> Path:
    return conditional_ckpt


def test_asked_attributes_are_set_and_the_others_drawn_from_the_training_faces_that_have_them(cond_ckpt):
    gan, _ = load_gan(cond_ckpt)
    assert gan.attr_names == NAMES
    labels = conditions(gan, 400, seed=0, fixed={"Smiling": 1.0})
    assert (labels[:, 0] == 1).all()
    share = labels[:, 1].mean().item()  # Eyeglasses, drawn from the smiling training faces
    table = gan.label_table
    expected = table.faces_with({0: 1, 1: 1}) / table.faces_with({0: 1})
    assert abs(share - expected) < 0.08 and 0 < share < 1
    assert torch.equal(conditions(gan, 400, seed=0), conditions(gan, 400, seed=0))


def test_the_checkpoint_keeps_its_label_table_as_plain_data_and_an_older_one_still_samples(cond_ckpt, tmp_path,
                                                                                          caplog):
    ckpt = torch.load(cond_ckpt, map_location="cpu", weights_only=True)  # plain tensors: no code runs
    table = ckpt[TABLE_KEY]
    assert set(table) == {"rows", "counts"} and table["rows"].dtype == torch.uint8
    assert table["rows"].shape[1] == 2 and int(table["counts"].sum()) == 64  # TINY's 64 training faces
    gan, _ = load_gan(cond_ckpt)
    assert torch.equal(gan.label_table.rows, table["rows"]) and gan.label_table.total == 64
    # A checkpoint written before the table was kept: loads, says so in one line, samples as before.
    del ckpt[TABLE_KEY]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with caplog.at_level(logging.INFO, logger="celebgan.run.checkpoint"):
        before, _ = load_gan(old)
    assert before.label_table is None
    assert [r.getMessage() for r in caplog.records if "no label table" in r.getMessage()]
    assert torch.equal(conditions(before, 16, seed=0, fixed={"Smiling": 1.0})[:, 1],
                       torch.bernoulli(before.attr_frequencies.expand(16, 2),
                                       generator=torch.Generator().manual_seed(0))[:, 1])
    assert sample(sample_cfg(old, tmp_path / "o.png", "n=4", "nrow=4", "attributes={Smiling: 1}"))["out"].is_file()
    assert sample(sample_cfg(old, tmp_path / "t.png", "mode=toggle", "toggle.faces=2"))["out"].is_file()
    assert celebgan.load_generator(old, device="cpu").sample(2, seed=0, attributes={"Smiling": 1}).shape[0] == 2
    # Its obedience asks for the held-out faces' label rows instead of its training split's.
    _, config = load_gan(old)
    judge = Judge(data_config=config["data"], cache_dir=tmp_path / "cache", classifier=JUDGE, n=8, n_ceiling=32,
                  read=real_subset)
    scores = judge(before)
    assert scores["asked_from"].startswith("held-out") and list(scores["per_attribute"]) == NAMES


def test_grid_with_attributes_follows_them_and_matches_the_python_api(cond_ckpt, tmp_path):
    def grid(name: str, *overrides: str) -> np.ndarray:
        return pixels(sample(sample_cfg(cond_ckpt, tmp_path / name, "n=8", "nrow=4", "seed=2", *overrides))["out"])

    smiling = grid("s.png", "attributes={Smiling: 1, Eyeglasses: 0}")
    assert np.array_equal(smiling, grid("s2.png", "attributes={Smiling: 1, Eyeglasses: 0}"))
    assert not np.array_equal(smiling, grid("n.png", "attributes={Smiling: 0, Eyeglasses: 0}"))
    # The command and the API draw the same faces for a seed and attributes.
    G = celebgan.load_generator(cond_ckpt, device="cpu")
    assert G.attr_names == NAMES
    api = G.sample(8, seed=2, attributes={"Smiling": 1, "Eyeglasses": 0})
    tile = smiling[2:18, 2:18].astype(int)
    assert np.abs(tile - (api[0].permute(1, 2, 0).numpy() * 255).round()).max() <= 1
    assert not torch.equal(api, G.sample(8, seed=2, attributes={"Smiling": 0, "Eyeglasses": 0}))


def test_an_attribute_the_model_lacks_is_one_error_listing_its_attributes(cond_ckpt, tmp_path):
    with pytest.raises(UserError, match="Male.*Smiling.*Eyeglasses"):
        sample(sample_cfg(cond_ckpt, tmp_path / "a.png", "attributes={Male: 1}"))
    with pytest.raises(UserError, match="0 or 1"):
        sample(sample_cfg(cond_ckpt, tmp_path / "a.png", "attributes={Smiling: 2}"))
    G = celebgan.load_generator(cond_ckpt, device="cpu")
    with pytest.raises(UserError, match="Male"):
        G.sample(2, seed=0, attributes={"Male": 1})
    assert not (tmp_path / "a.png").exists()


def test_attributes_or_toggle_on_an_unconditional_checkpoint_is_one_clear_error(trained_run, tmp_path):
    for overrides in (["attributes={Smiling: 1}"], ["mode=toggle"]):
        with pytest.raises(UserError, match="unconditional"):
            sample(sample_cfg(trained_run.ckpt, tmp_path / "a.png", *overrides))
    G = celebgan.load_generator(trained_run.ckpt, device="cpu")
    with pytest.raises(UserError, match="unconditional"):
        G.sample(2, seed=0, attributes={"Smiling": 1})
    assert torch.equal(G.sample(2, seed=0, attributes={}), G.sample(2, seed=0))  # nothing asked


def test_latent_directions_of_a_conditional_model_point_to_toggle(cond_ckpt, tmp_path):
    with pytest.raises(UserError, match="mode=toggle"):
        sample(sample_cfg(cond_ckpt, tmp_path / "a.png", "mode=attributes"))


@pytest.mark.parametrize("named, rows", [([], NAMES), (["Eyeglasses"], ["Eyeglasses"])])
def test_toggle_has_a_row_per_attribute_each_face_off_then_on(cond_ckpt, tmp_path, named, rows):
    attrs = [f"attributes={{{', '.join(f'{n}: 1' for n in named)}}}"] if named else []
    result = sample(sample_cfg(cond_ckpt, tmp_path / "t.png", "mode=toggle", "toggle.faces=3", "toggle.scale=1",
                               "seed=1", *attrs))
    assert result["rows"] == rows
    img = pixels(result["out"])
    width = 2 + 6 * 18  # 3 faces, each off and on, 16px with 2px gaps
    assert img.shape[1] == width
    # Under the header, each row: a caption strip, then a grid row of 16px faces (2px gaps: 20px tall).
    assert img.shape[0] > len(rows) * 20 + (len(rows) + 1) * 10
    # The row's faces off and on differ (the tiny model reads the attribute, if faintly: a face's change
    # can round away in 8 bits).
    bottom = img[-18:]
    changes = [np.abs(bottom[2:18, 2 + 36 * face:18 + 36 * face].astype(int)
                      - bottom[2:18, 20 + 36 * face:36 + 36 * face].astype(int)).max() for face in range(3)]
    assert max(changes) > 0, changes


def test_truncation_changes_the_faces_and_a_bad_value_is_one_clear_error(cond_ckpt, tmp_path):
    plain = pixels(sample(sample_cfg(cond_ckpt, tmp_path / "p.png", "n=4", "nrow=4"))["out"])
    trunc = pixels(sample(sample_cfg(cond_ckpt, tmp_path / "t.png", "n=4", "nrow=4", "truncation=0.5"))["out"])
    assert not np.array_equal(plain, trunc)
    with pytest.raises(UserError, match="truncation"):
        sample(sample_cfg(cond_ckpt, tmp_path / "b.png", "truncation=-1"))
    G = celebgan.load_generator(cond_ckpt, device="cpu")
    z = latents(4, G.nz, 0, truncation=0.5)
    assert z.abs().max() <= 0.5
    assert torch.allclose(G.sample(4, seed=0, truncation=0.5), G(z, G.labels(4, seed=0)))
    with pytest.raises(UserError, match="truncation"):
        G.sample(2, seed=0, truncation=0)


def test_evaluate_reports_obedience_beside_its_ceiling(cond_ckpt, tmp_path, capsys):
    judge = [f"obedience.classifier.{k}={v}" for k, v in JUDGE.items()]
    cfg = eval_cfg(f"ckpt={cond_ckpt}", "n_samples=20", "n_real=20", "pr_samples=10", "real_split=test",
                   f"metrics.cache_dir={tmp_path / 'cache'}", "metrics.batch_size=10",
                   "obedience.n=16", "obedience.n_ceiling=64", f"output={tmp_path / 'e.json'}", *judge)
    results = evaluate(cfg)
    obeyed = results["obedience"]
    # The faces' attributes are seeded too: the same numbers at every call.
    again = evaluate(cfg)
    assert again["metrics"]["fid"] == pytest.approx(results["metrics"]["fid"], rel=1e-6)
    assert again["obedience"] == obeyed
    assert list(obeyed["per_attribute"]) == NAMES and list(obeyed["ceiling"]["per_attribute"]) == NAMES
    for s in obeyed["per_attribute"].values():
        assert s["balanced"] == pytest.approx((s["with"] + s["without"]) / 2)
        assert s["with"] * 16 == round(s["with"] * 16)  # shares of 16 faces
    assert list(obeyed["independent"]["per_attribute"]) == NAMES and obeyed["asked_from"] == "training label rows"
    out = capsys.readouterr().out
    assert "Obedience" in out and "ceiling" in out and "Smiling" in out and "independent" in out
    # An unconditional checkpoint has nothing to obey.
    assert list(obeyed) and "obedience" not in evaluate(eval_cfg(
        f"ckpt={cond_ckpt}", "obedience.n=0", "n_samples=20", "n_real=20", "pr_samples=10", "real_split=test",
        f"metrics.cache_dir={tmp_path / 'cache'}", f"output={tmp_path / 'e2.json'}"))
    with pytest.raises(UserError, match="obedience.n"):
        evaluate(eval_cfg(f"ckpt={cond_ckpt}", "obedience.n=-1"))


def test_training_logs_obedience_per_epoch_when_metrics_are_on(tmp_path):
    judge = [f"+metrics.obedience.classifier.{k}={v}" for k, v in JUDGE.items()]
    run = tmp_path / "run"
    train_under_hydra([*CONDITIONAL, *RANDOM_METRICS, "trainer.max_epochs=2", "metrics.n_samples=16",
                       "metrics.n_real=16", "+metrics.obedience._target_=celebgan.metrics.judge.Judge",
                       "+metrics.obedience._partial_=true", "+metrics.obedience._recursive_=false",
                       "+metrics.obedience.data_config=${data}", f"+metrics.obedience.cache_dir={tmp_path / 'c'}",
                       "+metrics.obedience.n=8", "+metrics.obedience.n_ceiling=32", *judge], run)
    logs = run  # the event files lie in the run folder
    mean = scalars(logs, "metrics/obedience_mean")
    assert len(mean) == 2 and all(0 <= e.value <= 1 for e in mean)
    assert all(len(scalars(logs, f"metrics/obedience/{name}")) == 2 for name in NAMES)
    assert len(scalars(logs, "metrics/obedience_independent_mean")) == 2
    assert len(scalars(logs, "metrics/obedience_ceiling_mean")) == 2
    # The judge's settings in the stored run config (a _target_ outside model and data) load as before.
    gan, config = load_gan(run / "checkpoints" / "last.ckpt")
    assert gan.attr_names == NAMES and config["metrics"]["obedience"]["n"] == 8



def test_toggle_faces_are_drawn_larger_pixel_for_pixel(cond_ckpt, tmp_path):
    result = sample(sample_cfg(cond_ckpt, tmp_path / "t.png", "mode=toggle", "toggle.faces=2", "toggle.scale=3"))
    img = pixels(result["out"])
    assert img.shape[1] == 2 + 4 * (3 * 16 + 2)  # 2 faces, each off and on, 16px drawn at 48px
    face = img[-50:-2, 2:50].astype(int)  # the last row's first face
    assert np.array_equal(face, np.repeat(np.repeat(face[::3, ::3], 3, axis=0), 3, axis=1))  # 3x3 blocks
