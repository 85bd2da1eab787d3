"""`python -m celebgan.evaluate`: metrics of a checkpoint, the protocol printout and the JSON."""
import json
import shutil

import pytest
from hydra import compose, initialize_config_dir

from celebgan.errors import UserError
from celebgan.evaluate import evaluate

from conftest import CONF_DIR, random_features


def eval_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return random_features(compose(config_name="evaluate", overrides=list(overrides)))


def test_evaluate_a_tiny_run_prints_the_protocol_and_writes_json(trained_run, tmp_path, capsys):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"  # a copy: the results are written beside the checkpoint
    ckpt.parent.mkdir()
    shutil.copy(trained_run.ckpt, ckpt)
    cfg_overrides = [f"ckpt={ckpt}", "n_samples=40", "n_real=30", "pr_samples=20", "real_split=test",
                     f"metrics.cache_dir={tmp_path / 'cache'}", "metrics.batch_size=16", "metrics.kid_subsets=100",
                     "metrics.kid_subset_size=1000"]
    cfg = eval_cfg(*cfg_overrides)
    results = evaluate(cfg)
    out = capsys.readouterr().out
    for text in ["num_real", "30", "num_fake", "40", "real_split", "test", "random-conv-64",
                 "EMA", "FID", "KID", "precision", "recall", "k=3 on 20 real and 20 generated"]:
        assert text in out, text
    # Announced before any of the work: what is measured, that it is not the standard protocol, the estimate.
    announced, done = out.split("Protocol\n")
    # The protocol comes first, before the feature network is built or timed.
    assert out.index("real images       30 of split test") < out.index("feature network   random-conv-64")
    for text in ["generated images  40", "real images       30 of split test", "real features     computed now",
                 "random-conv-64", "Not the standard protocol", "n=50000 measures it", "estimate          about ",
                 ": 70 images through the networks at "]:
        assert text in announced, text
    assert "Results" not in announced and "precision  " not in announced
    assert "(not the standard protocol: 40 generated vs 30 real images; n=50000 measures it)" in done
    saved = json.loads((ckpt.parent / "last.eval.json").read_text())
    assert saved == results
    m = results["metrics"]
    assert m["fid"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert results["protocol"]["num_real"] == 30 and results["protocol"]["num_fake"] == 40
    assert results["protocol"]["kid_subsets"] == "100 x 30" and results["protocol"]["standard"] is False
    # Every subset holds all 30 real images: a spread would be meaningless, so none is given.
    assert m["kid_std"] is None and "no spread" in out and "+-" not in out
    small = evaluate(eval_cfg(*cfg_overrides, "metrics.kid_subset_size=10", f"output={tmp_path / 'small.json'}"))
    assert small["metrics"]["kid_std"] > 0 and "+-" in capsys.readouterr().out
    # The generated images are the same at every call (fixed seed): the numbers repeat; the real
    # features are read from the cache now, and the estimate counts the generated images alone.
    again = evaluate(cfg)
    assert again["metrics"]["fid"] == pytest.approx(m["fid"], rel=1e-6)
    out = capsys.readouterr().out
    assert "real features     cached" in out and ": 40 images through the networks at " in out


@pytest.mark.parametrize("overrides, n", [(["device=cpu"], 2000), (["device=cuda"], 50_000),
                                          (["device=cpu", "n=50000"], 50_000)])
def test_evaluate_sizes_its_sets_to_the_device_with_the_standard_one_setting_away(overrides, n):
    cfg = eval_cfg("ckpt=x", *overrides)  # composed only: a CUDA device is named, not used
    assert (cfg.n_samples, cfg.n_real) == (n, n)


# A file that is not a celebgan checkpoint: test_sample.py's table of readers and bad files.


def test_evaluate_missing_checkpoint_is_one_clear_error_naming_it(tmp_path, monkeypatch):
    # From the command line (exit status 2, no traceback, no outputs/): tests/test_cli_errors.py's table.
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "none.ckpt"
    with pytest.raises(UserError, match="Checkpoint not found") as err:
        evaluate(eval_cfg(f"ckpt={missing}"))
    assert str(missing) in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing written
