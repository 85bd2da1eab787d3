"""A cluster's stop signal: the run saves last.ckpt after the step under way and exits; resume=auto
then continues it exactly, mid-epoch too."""
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_same_training_state, cli_cmd, cli_env, compose_config

from celebgan.train import train


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGUSR1"])
def test_a_signal_saves_last_ckpt_and_resume_auto_continues_exactly(tmp_path, signum):
    # 4 steps per epoch, 2 epochs; the signal arrives at the end of step 6, halfway through epoch 1.
    torch.set_num_threads(1)  # as in the subprocess (cli_env): the same float sums
    straight = compose_config([*TINY, "trainer.max_epochs=2"], tmp_path / "a" / "straight")
    train(straight)

    stopped = tmp_path / "b" / "stopped"
    result = subprocess.run(cli_cmd("trainer.max_epochs=2", f"hydra.run.dir={stopped}",
                                    "+callbacks.signal._target_=probe.SignalAt", "+callbacks.signal.step=6",
                                    f"+callbacks.signal.signum={signum}"),
                            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 128 + signal.SIGTERM, out
    assert "Traceback" not in out and "Stopped by a signal after training step 6 (epoch 1)" in out
    saved = torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 12 and saved["epoch"] == 1  # 6 D steps + 6 G steps
    assert not list((stopped / "samples").glob("epoch_0001.png"))  # epoch 1 was not finished

    resumed = compose_config([*TINY, "trainer.max_epochs=2", "resume=auto"], tmp_path / "b" / "resumed")
    train(resumed)  # continues in the stopped run's folder
    assert_same_training_state(torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True),
                               torch.load(Path(straight.paths.output_dir) / "checkpoints" / "last.ckpt",
                                          weights_only=True))
