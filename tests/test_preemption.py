"""A cluster's stop signal or Ctrl-C: the run saves last.ckpt after the step under way and exits;
resume=auto then continues it exactly, mid-epoch too. A stop sent to the whole process group
(scancel, Ctrl-C in a terminal) reaches the DataLoader workers as well."""
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY, TINY_CLI, assert_same_training_state, cli_cmd, cli_env, compose_config, make_celeba
from lightning.pytorch.utilities.exceptions import SIGTERMException
from events import scalar_steps

from celebgan.run.resume import stopped_by_signal
from celebgan.train import train

# 4 steps per epoch, 2 epochs; the signal arrives at the end of step 6, halfway through epoch 1.
SIGNAL_AT_STEP_6 = ["+callbacks.signal._target_=probe.SignalAt", "+callbacks.signal.step=6"]


def run_cli(cmd: list[str], cwd: Path, tmpdir: Path | None = None) -> tuple[int, str]:
    """Runs a command line in its own process group (a group signal reaches it and its workers
    alone); tmpdir: its TMPDIR, where multiprocessing keeps its processes' pymp-* folders."""
    env = cli_env()
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def straight(trained_run) -> Path:
    """The run folder of the same run (TINY for 2 epochs), never stopped."""
    return trained_run.dir


@pytest.mark.integration
@pytest.mark.parametrize(("signum", "group", "status", "by"), [
    ("SIGTERM", False, 143, "a signal"),
    pytest.param("SIGUSR1", False, 143, "a signal", marks=pytest.mark.slow),  # SIGTERM's path
    ("SIGHUP", False, 129, "SIGHUP"),  # the ssh session or terminal of the run closed
    ("SIGXCPU", False, 152, "SIGXCPU"),  # a CPU-time limit, before its SIGKILL
    ("SIGINT", True, 130, "Ctrl-C"),  # as a terminal sends it: to the whole foreground group
])
def test_a_signal_saves_last_ckpt_and_resume_auto_continues_exactly(tmp_path, straight, signum, group, status, by):
    stopped = tmp_path / "runs" / "stopped"
    # Ctrl-C is pressed a second time while the checkpoint is being saved.
    again = signum == "SIGINT"
    code, out = run_cli(cli_cmd("trainer.max_epochs=2", f"hydra.run.dir={stopped}", *SIGNAL_AT_STEP_6,
                                f"+callbacks.signal.signum={signum}", f"+callbacks.signal.group={group}",
                                f"+callbacks.signal.again_while_saving={again}"), tmp_path)
    assert code == status, out
    assert "Traceback" not in out and f"Stopped by {by} after training step 6 (epoch 2)" in out
    assert ("Ctrl-C again: ignored while the run stops and saves" in out) == again
    assert "Continue the run with resume=auto" in out
    # The closing lines of a finished run, with how to continue, and nothing after them
    assert "Stopped in epoch 2, after 6 training steps; resume=auto continues the run." in out
    closing = out[out.index("Stopped in epoch 2"):]
    assert f"run folder:  {stopped}" in closing and f"checkpoint:  {stopped / 'checkpoints' / 'last.ckpt'}" in closing
    # Lightning's own words for the stop: its default save mode, and SIGTERM where Ctrl-C was pressed
    assert "weights_only" not in out and "Received SIGTERM" not in out
    saved = torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 12 and saved["epoch"] == 1  # 6 D steps + 6 G steps
    assert not list((stopped / "samples").glob("epoch_0002.png"))  # epoch 2 was not finished

    resumed = compose_config([*TINY, "trainer.max_epochs=2", "resume=auto"], tmp_path / "runs" / "resumed")
    train(resumed)  # continues in the stopped run's folder
    assert_same_training_state(torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True),
                               torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True))
    # One TensorBoard run, continued at the step reached: each training step once.
    assert scalar_steps(stopped, "train/d_loss") == scalar_steps(straight, "train/d_loss") == list(range(1, 9))


@pytest.fixture(scope="module")
def celeba_folder(tmp_path_factory) -> list[str]:
    """The overrides of a run on the JPEG loader (no prepared array) with two worker processes, 4 steps per epoch."""
    root = tmp_path_factory.mktemp("celeba")
    make_celeba(root, per_split=64, size=(44, 54))
    data = ["data=celeba32", f"data.root={root}", "data.img_size=16", "data.batch_size=16",
            "data.prepared=false", "data.num_workers=2"]
    tiny = [o for o in TINY_CLI if not o.startswith("data")]
    return [*tiny, *data, "trainer.max_epochs=2"]


def train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "celebgan.train", *overrides]


@pytest.mark.integration
@pytest.mark.parametrize(("signum", "status"), [
    ("SIGTERM", 143), ("SIGHUP", 129),
    pytest.param("SIGINT", 130, marks=pytest.mark.slow),  # to the group as above, with workers
])
def test_a_signal_to_the_whole_group_stops_workers_too_and_saves(tmp_path, celeba_folder, signum, status):
    stopped, tmpdir = tmp_path / "runs" / "stopped", tmp_path / "tmp"
    code, out = run_cli(train_cmd(*celeba_folder, f"hydra.run.dir={stopped}", *SIGNAL_AT_STEP_6,
                                  f"+callbacks.signal.signum={signum}", "+callbacks.signal.group=true"), tmp_path, tmpdir)
    assert code == status, out
    assert "Traceback" not in out and "after training step 6 (epoch 2)" in out and "resume=auto" in out
    assert torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    # The workers were shut down by the training process, not killed: their folders went with them.
    assert not list(tmpdir.glob("pymp-*"))

    train(compose_config([*celeba_folder, "resume=auto"], tmp_path / "runs" / "resumed"))  # its workers too
    assert torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 16
    assert scalar_steps(stopped, "train/d_loss") == list(range(1, 9))


@pytest.mark.integration
def test_workers_that_died_of_the_signal_are_part_of_the_stop(tmp_path, celeba_folder):
    # SIGTERM to the training process, then its workers die before they could ignore it.
    stopped = tmp_path / "stopped"
    code, out = run_cli(train_cmd(*celeba_folder, f"hydra.run.dir={stopped}", *SIGNAL_AT_STEP_6,
                                  "+callbacks.signal.kill_workers=true"), tmp_path)
    assert code == 143, out
    assert "Traceback" not in out and "Stopped by a signal after training step 6 (epoch 2)" in out
    assert torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12


@pytest.mark.integration
def test_a_closed_terminal_saves_last_ckpt_and_the_log_says_so(tmp_path):
    # The run's stdout and stderr are a terminal (a pty) that hangs up at step 6, with SIGHUP.
    master, terminal = pty.openpty()
    stopped = tmp_path / "stopped"
    cmd = cli_cmd("trainer.max_epochs=2", "trainer.enable_progress_bar=true", f"hydra.run.dir={stopped}",
                  "+callbacks.hup._target_=probe.HangUpAt", "+callbacks.hup.step=6", f"+callbacks.hup.master={master}")
    process = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdin=subprocess.DEVNULL, stdout=terminal,
                               stderr=terminal, pass_fds=(master,), start_new_session=True)
    os.close(terminal)
    os.close(master)  # the run holds the terminal's last master copy, which HangUpAt closes
    assert process.wait(timeout=300) == 129
    assert torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    log = (stopped / "train.log").read_text()
    assert "Stopped by SIGHUP after training step 6 (epoch 2)" in log and "resume=auto" in log
    assert not (stopped / "run.lock").exists()


@pytest.mark.integration
def test_a_run_started_under_nohup_keeps_training_through_a_hang_up(tmp_path):
    # nohup starts a command with SIGHUP ignored so that it outlives its terminal: a SIGHUP at step 6
    # (the terminal closing) changes nothing, and the run trains all its 12 steps.
    # As nohup does: SIGHUP ignored where the command starts, which the command inherits (a new
    # process across exec, a served one from the disposition its request carries).
    run = tmp_path / "run"
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        done = subprocess.run(cli_cmd("trainer.max_epochs=3", f"hydra.run.dir={run}", *SIGNAL_AT_STEP_6,
                                      "+callbacks.signal.signum=SIGHUP"), cwd=tmp_path, env=cli_env(),
                              capture_output=True, text=True, timeout=300)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (run / "train.log").read_text()
    assert "SIGHUP is ignored in this process" in log and "Stopped" not in log
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 24


def starting_cmd(runs: Path, name: str, signum: str, at: str = "build") -> list[str]:
    return cli_cmd(f"hydra.run.dir={runs / name}", "+callbacks.signal._target_=probe.SignalWhileStarting",
                   f"+callbacks.signal.signum={signum}", f"+callbacks.signal.at={at}")


@pytest.mark.integration
@pytest.mark.parametrize(("signum", "at", "status"), [
    ("SIGTERM", "build", 143),  # while train() builds the run: before any Trainer
    ("SIGHUP", "fit_start", 129),  # once Lightning holds SIGTERM and the logger declared the run
    pytest.param("SIGXCPU", "build", 152, marks=pytest.mark.slow),  # SIGTERM's path, another status
])
def test_a_signal_before_the_first_step_leaves_no_folder_and_no_lock(tmp_path, signum, at, status):
    runs, tmpdir = tmp_path / "runs", tmp_path / "tmp"
    code, out = run_cli(starting_cmd(runs, "stopped", signum, at), tmp_path, tmpdir)
    assert code == status, out
    assert "Traceback" not in out and f"{signum} before the run's first training step: stopping" in out
    assert not runs.exists() or list(runs.iterdir()) == []  # no .hydra, log, events or run.lock left
    assert not list(tmpdir.glob("pymp-*"))


@pytest.mark.integration
def test_a_run_killed_while_it_started_is_removed_by_the_next_run_beside_it(tmp_path):
    runs = tmp_path / "runs"
    code, out = run_cli(starting_cmd(runs, "killed", "SIGKILL"), tmp_path)  # nothing can catch it
    assert code == -9, out
    assert sorted(p.name for p in (runs / "killed").iterdir()) == [".hydra", "run.lock", "train.log"]
    code, out = run_cli(cli_cmd(f"hydra.run.dir={runs / 'next'}", "trainer.max_steps=1"), tmp_path)
    assert code == 0, out
    assert f"Removed {runs / 'killed'}: the run that process " in out
    assert "was killed before its first training step" in out
    assert [p.name for p in runs.iterdir()] == ["next"]


def test_a_dead_worker_is_part_of_a_stop_only_after_a_stop_signal():
    dead = RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")
    gone = RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")
    stopping, running = SimpleNamespace(received_sigterm=True), SimpleNamespace(received_sigterm=False)
    assert stopped_by_signal(stopping, dead) and stopped_by_signal(stopping, gone)
    assert stopped_by_signal(stopping, ConnectionResetError(104, "Connection reset by peer"))
    assert not stopped_by_signal(running, dead)  # a worker that crashed on its own is a crash
    assert not stopped_by_signal(stopping, RuntimeError("CUDA out of memory"))
    assert stopped_by_signal(running, SIGTERMException())
