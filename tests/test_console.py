"""What a run says: the cost of its metrics before it starts, one line per epoch (no progress bar
redrawn into a file), and a closing summary; Lightning's start-up tips are gone."""
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RANDOM_METRICS, cli_cmd, cli_env
from events import events

from celebgan.errors import UserError
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
    assert "CPU threads: 1, from OMP_NUM_THREADS (set in the environment)" in out  # cli_env's
    log = (run / "train.log").read_text()
    for text in (out, log):
        assert text.count("epoch 1/2  step 4  d_loss ") == 1 and text.count("epoch 2/2  step 8  d_loss ") == 1
        assert f"run folder:  {run}" in text
        assert f"last grid:   {run / 'samples' / 'epoch_0002.png'}" in text
        assert f"checkpoint:  {run / 'checkpoints' / 'last.ckpt'}" in text
        assert f"tensorboard --logdir {tmp_path} " in text  # the folder holding the run
    assert not (run / "checkpoints" / "best.ckpt").exists()
    # Opened as the hint says, TensorBoard names the run by its folder, not ".", and the epoch's grid
    # lies at the step the console said.
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    assert list(multiplexer.Runs()) == ["run"]
    assert [e.step for e in events(run).Images("train/samples")] == [4, 8]


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


@pytest.mark.integration
def test_a_run_says_nothing_that_is_not_about_it(tmp_path):
    run = tmp_path / "run"
    cmd = cli_cmd("trainer.max_steps=6", "trainer.max_epochs=3", "trainer.enable_model_summary=true",
                  f"hydra.run.dir={run}")
    result = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    for noise in ("Trainer already configured with model summary", "GPU available", "TPU available", "FLOPs",
                  "Total Flops", "max_steps=12` reached", "litlogger", "in eval mode at the start of training",
                  "INFO: "):  # the last: a Lightning line printed a second time by its own handler
        assert noise not in out, noise
    # The table shows the EMA generator as what it is: never trained, only sampled from in eval mode.
    assert re.search(r"generator_ema \| Generator +\| [\d.]+ K +\| eval", out), out
    assert "Finished after 2 epoch(s), 6 training steps." in out
    # Lightning's own lines reach the run's log file too, once each.
    log = (run / "train.log").read_text()
    assert log.count("Seed set to 42") == out.count("Seed set to 42") == 1


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "celebgan.run.callbacks" and " kimg " in r.getMessage()]


def test_progress_lines_within_an_epoch_count_the_runs_steps_images_and_eta(make_cfg, caplog):
    # 4 training steps of 16 images per epoch; a line after every step (every_n_seconds tiny).
    cfg = make_cfg("trainer.max_epochs=2", "callbacks.epoch_log.every_n_seconds=1e-9")
    with caplog.at_level(logging.INFO):
        train(cfg)
    lines = progress_lines(caplog)
    assert [line.split("  ")[:3] for line in lines] == [
        [f"epoch {1 + (k - 1) // 4}/2", f"step {k}/8", f"{k * 16 / 1000:.1f} kimg"] for k in range(1, 9)]
    assert all(re.fullmatch(r".* kimg  \d+ img/s(  ETA [\d.]+ (s|min|h))?", line) for line in lines), lines
    assert "ETA" in lines[0] and "ETA" not in lines[-1]  # nothing left after the last step
    epochs = [r.getMessage() for r in caplog.records if " d_loss " in r.getMessage()]
    assert epochs[0].startswith("epoch 1/2  step 4  ") and re.search(r"\)  ETA [\d.]+ (s|min|h)$", epochs[0])
    assert epochs[1].startswith("epoch 2/2  step 8  ") and "ETA" not in epochs[1]


def test_progress_lines_follow_wall_time(make_cfg, caplog):
    with caplog.at_level(logging.INFO):
        train(make_cfg("trainer.max_epochs=2"))  # every 60 s: none in a run of a second
    assert progress_lines(caplog) == []
    with pytest.raises(UserError, match="every_n_seconds"):
        train(make_cfg("callbacks.epoch_log.every_n_seconds=-1"))


def test_a_grid_of_nearly_uniform_images_says_why(make_cfg, caplog):
    import torch
    from PIL import Image

    from celebgan.run.callbacks import FLAT_STD, image_spread

    assert image_spread(torch.full((4, 3, 8, 8), 0.3)) == 0.0
    assert image_spread(torch.rand(4, 3, 8, 8) * 2 - 1) > 10 * FLAT_STD
    cfg = make_cfg("trainer.max_epochs=2")  # 8 steps: the EMA generator draws one grey
    with caplog.at_level(logging.INFO):
        train(cfg)
    warnings = [r.getMessage() for r in caplog.records if "nearly uniform" in r.getMessage()]
    assert len(warnings) == 1 and "after 4 training steps. Most likely too few steps" in warnings[0]
    samples = Path(cfg.paths.output_dir) / "samples"
    for name in ("epoch_0001.png", "epoch_0002.png"):  # 2 rows of 8 16px images, 2px gaps, under a caption
        width, height = Image.open(samples / name).size
        assert width == 8 * 18 + 2 and height > 2 * 18 + 2


def test_the_tensorboard_hint_works_as_printed_with_or_without_an_activated_environment(tmp_path, monkeypatch):
    import sys

    from celebgan.run.sweep import tensorboard_command

    run = tmp_path / "run"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "tensorboard"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))  # activated: tensorboard is on PATH
    flags = "--samples_per_plugin images=1000"  # every grid, not TensorBoard's 10 per tag
    assert tensorboard_command(run) == f"tensorboard --logdir {run} {flags}"
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # a fresh shell: not on PATH
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))  # the environment's own script
    assert tensorboard_command(run) == f"{script} --logdir {run} {flags}"
    script.unlink()  # none beside the interpreter: through the interpreter itself
    assert tensorboard_command(run) == f"{bin_dir / 'python'} -m tensorboard.main --logdir {run} {flags}"
    assert tensorboard_command(tmp_path / "a b") == f"{bin_dir / 'python'} -m tensorboard.main --logdir '{tmp_path}/a b' {flags}"


@pytest.mark.integration
@pytest.mark.parametrize("command", ["celebgan.train", "celebgan.evaluate", "celebgan.sample", "celebgan.prepare"])
def test_each_commands_help_starts_with_its_own_usage(command):
    result = subprocess.run([sys.executable, "-m", command, "--help"], env=cli_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"python -m {command} "), lines[:3]
    assert len(lines) < 80  # usage, examples and settings, not the whole composed config
    if command != "celebgan.train":  # training's config groups belong to training's help only
        assert "model: acgan" not in result.stdout and "callbacks:" not in result.stdout
    else:
        assert "Examples:" in result.stdout and "model: acgan, diffaugment" in result.stdout


def test_no_progress_line_once_a_stop_signal_arrived(caplog):
    from types import SimpleNamespace

    from celebgan.run.callbacks import EpochLog

    log_cb = EpochLog(every_n_seconds=1e-9)
    module = SimpleNamespace(steps_done=3, n_dis=1)
    trainer = SimpleNamespace(is_global_zero=True, received_sigterm=False, world_size=1, max_steps=-1,
                              max_epochs=2, num_training_batches=4, current_epoch=0)
    log_cb.on_train_start(trainer, module)
    batch = (torch.zeros(16, 3, 16, 16),)
    with caplog.at_level(logging.INFO):
        module.steps_done = 4
        log_cb.on_train_batch_end(trainer, module, None, batch, 3)
        said = len(progress_lines(caplog))
        trainer.received_sigterm = True  # "stopping after the training step under way"
        module.steps_done = 5
        log_cb.on_train_batch_end(trainer, module, None, batch, 0)
    assert said == 1 and len(progress_lines(caplog)) == 1


def test_lightnings_lines_reach_the_runs_handlers_once_whichever_was_imported_first(monkeypatch):
    # Imported before logging was set up (a notebook, a script importing lightning first), Lightning
    # gives lightning.pytorch and lightning.fabric handlers of their own and stops their lines from
    # passing on to the root's: the run's log file would get none of them.
    import io

    from celebgan.train import lightning_logs_once

    names = ("lightning", "lightning.pytorch", "lightning.fabric")
    for name in names:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", [logging.StreamHandler(io.StringIO())])
        monkeypatch.setattr(logger, "propagate", False)
    seen = io.StringIO()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logging.StreamHandler(seen)])
    lightning_logs_once()
    logging.getLogger("lightning.fabric.utilities.seed").info("Seed set to 42")
    logging.getLogger("lightning.pytorch.trainer").info("a Trainer line")
    assert seen.getvalue() == "Seed set to 42\na Trainer line\n"
    assert all(not logging.getLogger(name).handlers for name in names)
