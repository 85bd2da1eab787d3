"""Exact resume: N steps straight equal N/2 steps, SIGKILL, resume to N, bit for bit on CPU."""
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, TRAINED, assert_same_training_state, cli_cmd, cli_env, compose_config
from events import scalar_steps

from celebgan.train import train

# 2 epochs of 4 steps; the kill comes after epoch 0's last.ckpt, at the start of epoch 1.
RUN = ["data.num_images=64", "data.batch_size=16", "trainer.max_epochs=2"]
assert not set(RUN) - set(TRAINED)  # the session's trained run is this run


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_killed_then_resumed_run_equals_straight_run(tmp_path, precision, trained_run):
    # The run never killed, trained in the test's process (one thread, as the command lines here):
    # in 32-true the session's trained run, which is this one.
    straight_dir = trained_run.dir
    if precision != "32-true":
        straight_dir = tmp_path / "straight"
        train(compose_config([*TINY, *RUN, f"trainer.precision={precision}"], straight_dir))
    straight = torch.load(straight_dir / "checkpoints" / "last.ckpt", weights_only=True)

    # The same run, SIGKILLed once epoch 0's checkpoint is on disk.
    runs, probe = tmp_path / "runs", tmp_path / "probe"
    probe.mkdir()
    first = runs / "first"
    proc = subprocess.Popen(
        cli_cmd(*RUN, f"trainer.precision={precision}", f"hydra.run.dir={first}",
                "+callbacks.probe._target_=probe.Probe", f"+callbacks.probe.dirpath={probe}",
                "+callbacks.probe.block_at_epoch=1"),
        cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (probe / "blocked").exists():
            assert proc.poll() is None, proc.stderr.read()[-4000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    halfway = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    assert halfway["global_step"] == straight["global_step"] // 2

    # resume=auto finds the killed run (same model and data) and continues in its folder.
    second = runs / "second"
    run(cli_cmd(*RUN, f"trainer.precision={precision}", f"hydra.run.dir={second}", "resume=auto"), tmp_path)
    resumed = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    assert_same_training_state(straight, resumed)

    # One TensorBoard run, continued in place: every step once, as in the straight run.
    assert scalar_steps(first, "train/d_loss") == scalar_steps(
        straight_dir, "train/d_loss") == list(range(1, 9))
    assert sorted(p.name for p in (first / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    # Its log goes on in the run's train.log; the folder Hydra made for the invocation is gone.
    assert not second.exists()
    log = (first / "train.log").read_text()
    assert log.index("epoch 1/2  step 4  d_loss") < log.index("Resuming") < log.index("epoch 2/2  step 8  d_loss")
