"""What a run says: the cost of its metrics before it starts, one line per epoch (no progress bar
redrawn into a file), and a closing summary; Lightning's start-up tips are gone."""
import logging
import subprocess
from pathlib import Path

import pytest
from conftest import RANDOM_METRICS, cli_cmd, cli_env

from celebgan.train import train

@pytest.mark.integration
def test_output_to_a_file_is_one_line_per_epoch_and_a_summary(tmp_path):
    run = tmp_path / "run"
    cmd = cli_cmd("trainer.max_epochs=2", "trainer.enable_progress_bar=${celebgan.stdout_is_terminal:}", "metrics=auto",
                  "trainer.accelerator=auto", f"hydra.run.dir={run}")
    result = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "\r" not in out  # no progress bar redrawn in place
    assert "Tip" not in out and "TPU available" not in out
    assert "LeafSpec" not in out and "FLOPs" not in out  # Lightning's deprecation note; rich's summary
    assert "FID/KID are off: this run trains on a CPU" in out  # metrics=auto on a CPU
    log = (run / "train.log").read_text()
    for text in (out, log):
        assert text.count("epoch 1/2  step 4  d_loss ") == 1 and text.count("epoch 2/2  step 8  d_loss ") == 1
        assert f"run folder:  {run}" in text
        assert f"last grid:   {run / 'samples' / 'epoch_0001.png'}" in text
        assert f"checkpoint:  {run / 'checkpoints' / 'last.ckpt'}" in text
        assert f"tensorboard --logdir {run}" in text
    assert not (run / "checkpoints" / "best.ckpt").exists()


def test_metrics_cost_is_announced_before_measuring(make_cfg, tmp_path, caplog):
    cfg = make_cfg("trainer.max_epochs=2", *RANDOM_METRICS, "metrics.n_samples=32",
                   "metrics.n_real=48", "metrics.batch_size=16", f"metrics.cache_dir={tmp_path / 'cache'}")
    with caplog.at_level(logging.INFO):
        train(cfg)
    first = [r.getMessage() for r in caplog.records if r.getMessage().startswith("FID/KID:")]
    assert len(first) == 1
    assert first[0].startswith("FID/KID: 2 evaluation(s) of 32 generated images + 48 real images once; "
                               "RandomFeatures runs at ")
    assert "and each FID/KID computation takes " in first[0] and "in all on top of the training" in first[0]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(cfg)  # the real features are cached now
    again = [r.getMessage() for r in caplog.records if r.getMessage().startswith("FID/KID:")]
    assert "(real features cached)" in again[0]


def test_metrics_asked_for_measure_on_a_cpu(make_cfg, tmp_path):
    cfg = make_cfg(*RANDOM_METRICS, f"metrics.cache_dir={tmp_path / 'cache'}")  # on_cpu: true, as in every preset but auto
    assert "metrics/fid" in train(cfg)
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt").is_file()


def test_the_tensorboard_hint_works_as_printed_with_or_without_an_activated_environment(tmp_path, monkeypatch):
    import sys

    from celebgan.train import tensorboard_command

    run = tmp_path / "run"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "tensorboard"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))  # activated: tensorboard is on PATH
    assert tensorboard_command(run) == f"tensorboard --logdir {run}"
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # a fresh shell: not on PATH
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))  # the environment's own script
    assert tensorboard_command(run) == f"{script} --logdir {run}"
    script.unlink()  # none beside the interpreter: through the interpreter itself
    assert tensorboard_command(run) == f"{bin_dir / 'python'} -m tensorboard.main --logdir {run}"
    assert tensorboard_command(tmp_path / "a b") == f"{bin_dir / 'python'} -m tensorboard.main --logdir '{tmp_path}/a b'"
