"""A run folder belongs to one live process (RUN/run.lock): a second process is refused before it
writes anything; the lock of a process that ended is taken over; the lock goes however a run ends."""
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_CLI, cli_env, copy_run, run_commands
from omegaconf import open_dict

from celebgan.run import lock
from celebgan.errors import UserError
from celebgan.train import train

HOLD = "import sys; from celebgan.run import lock; lock.acquire(sys.argv[1]); print('held', flush=True); sys.stdin.read()"


def in_dir(cfg, run_dir: Path):
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def holder(run_dir: Path) -> subprocess.Popen:
    """Another process that owns run_dir until its stdin is closed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], env=cli_env(), text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == "held"
    return process


def run_cli(tmp: Path, *cases: list[str]) -> list[dict]:
    """celebgan.train command lines run one after another in one interpreter (tests/cli_runner.py)."""
    return run_commands([("celebgan.train", [*TINY_CLI, *args]) for args in cases], tmp)


@pytest.mark.integration
def test_a_second_process_is_refused_naming_the_owner_and_writes_nothing(make_cfg, tmp_path, trained_run):
    runs = tmp_path / "runs"
    first = copy_run(trained_run.dir, runs / "first")
    other = holder(first)
    try:
        before = snapshot(first)
        owner = f"process {other.pid} on host {socket.gethostname()} (since "
        for overrides, run_dir in [([f"resume={first / 'checkpoints' / 'last.ckpt'}"], runs / "second"),
                                   (["resume=auto"], runs / "third"),  # the newest run of this config
                                   ([], first)]:  # a new run in the same folder
            with pytest.raises(UserError, match="in use by") as err:  # 3 epochs: more than the 2 trained
                train(in_dir(make_cfg("trainer.max_epochs=3", *overrides), run_dir))
            assert str(err.value).startswith(f"{first} is in use by {owner}")
        # From the command line, also before Hydra writes its config and log into the folder. (And,
        # elsewhere, the command's own ends: a finished run and a mistake leave no lock behind.)
        results = run_cli(tmp_path, [f"hydra.run.dir={first}"],
                          ["resume=auto", "trainer.max_epochs=3", f"hydra.run.dir={runs / 'fourth'}"],
                          [f"hydra.run.dir={tmp_path / 'done'}"],
                          ["data.num_images=0", f"hydra.run.dir={tmp_path / 'mistake'}"])
        assert [r["code"] for r in results] == [2, 2, 0, 2], results
        for result in results[:2]:
            out = result["output"]
            assert "Traceback" not in out and out.count(f"{first} is in use by {owner}") == 1, out
        assert snapshot(first) == before
        assert sorted(p.name for p in runs.iterdir()) == ["first"]
    finally:
        other.stdin.close()
        other.wait()
    assert (tmp_path / "done" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "done" / lock.LOCK_NAME).exists() and not (tmp_path / "mistake").exists()


@pytest.mark.integration
def test_the_lock_of_an_ended_process_is_taken_over_and_goes_when_the_run_ends(make_cfg, tmp_path, caplog):
    run_dir = tmp_path / "run"
    ended = holder(run_dir)
    ended.stdin.close()
    ended.wait()  # its lock stays behind, naming a process that no longer runs
    with caplog.at_level(logging.WARNING, logger="celebgan.run.lock"):
        train(in_dir(make_cfg(), run_dir))
    assert f"took over the lock of process {ended.pid} on host {socket.gethostname()}" in caplog.text
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / lock.LOCK_NAME).exists()

    # A mistake found after the lock was taken: no lock, and no folder made for it alone.
    with pytest.raises(UserError, match="model.n_dis=0"):
        train(in_dir(make_cfg("model.n_dis=0"), tmp_path / "mistake"))
    assert not (tmp_path / "mistake").exists()

    # SIGTERM: the run saves last.ckpt and exits with 143; the lock goes too.
    with pytest.raises(SystemExit) as stopped:
        train(in_dir(make_cfg("+callbacks.signal._target_=probe.SignalAt", "+callbacks.signal.step=2"),
                     tmp_path / "stopped"))
    assert stopped.value.code == 143
    assert (tmp_path / "stopped" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "stopped" / lock.LOCK_NAME).exists()


def write_lock(run_dir: Path, **owner) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / lock.LOCK_NAME
    path.write_text(json.dumps({**lock.this_process(), **owner}) if owner else "")
    return path


def test_a_lock_of_another_host_is_refused_with_how_to_clear_it(tmp_path, monkeypatch):
    path = write_lock(tmp_path, pid=4321, host="gpu-node-7", slurm_job="111")
    before = path.read_text()
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(UserError, match="process 4321 on host gpu-node-7") as err:
        lock.acquire(tmp_path)
    assert f"delete {path}" in str(err.value) and "cannot be checked" in str(err.value)
    assert path.read_text() == before
    # The same SLURM job, requeued onto another host: its earlier run has ended.
    monkeypatch.setenv("SLURM_JOB_ID", "111")
    lock.acquire(tmp_path)
    assert lock.read_owner(path)["pid"] == os.getpid()


def test_a_process_id_taken_by_a_later_process_does_not_hold_the_lock(tmp_path):
    if lock.process_start(os.getppid()) is None:
        pytest.skip("needs /proc")
    # The parent runs, but it is not the process that wrote the lock (another start time).
    path = write_lock(tmp_path, pid=os.getppid(), process_start="1")
    lock.acquire(tmp_path)
    assert lock.read_owner(path)["pid"] == os.getpid()
    # The same parent with its own start time: a live owner.
    write_lock(tmp_path, pid=os.getppid(), process_start=lock.process_start(os.getppid()))
    with pytest.raises(UserError, match=f"process {os.getppid()}"):
        lock.acquire(tmp_path)


def test_an_empty_lock_is_refused(tmp_path):
    path = write_lock(tmp_path)
    with pytest.raises(UserError, match="names no process") as err:
        lock.acquire(tmp_path)
    assert f"delete {path}" in str(err.value)


def test_a_further_rank_of_a_launched_run_takes_no_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")  # as Lightning starts DDP's rank 1 in rank 0's run folder
    write_lock(tmp_path, pid=os.getppid(), host="elsewhere")
    with lock.owned(tmp_path):
        pass
    assert lock.read_owner(tmp_path / lock.LOCK_NAME)["host"] == "elsewhere"


def test_a_command_stopped_while_it_starts_leaves_no_folder(tmp_path):
    # What HydraRunLock leaves to atexit when the command ends (Ctrl-C) before train() takes over.
    new, kept = tmp_path / "runs" / "new", tmp_path / "runs" / "kept"
    for run_dir in (new, kept):
        lock.acquire(run_dir)
    (kept / "train.log").write_text("started\n")
    lock.release_unused(new, created=True)
    lock.release_unused(kept, created=True)
    assert not new.exists() and (tmp_path / "runs").is_dir()
    assert [p.name for p in kept.iterdir()] == ["train.log"]  # the lock went, what was written stays


def startup_files(run_dir: Path) -> Path:
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 42\n")
    (run_dir / "train.log").write_text("")
    return run_dir


def test_a_signal_while_hydra_writes_leaves_no_folder(tmp_path):
    # What HydraRunLock leaves to atexit when a stop signal ends the command before train() runs.
    run_dir = tmp_path / "runs" / "new"
    lock.acquire(run_dir)
    startup_files(run_dir)
    lock.release_unused(run_dir, created=True, log_name="train.log")
    assert not run_dir.exists()


@pytest.mark.integration
def test_the_next_run_removes_only_folders_of_runs_killed_while_they_started(tmp_path, caplog):
    runs = tmp_path / "runs"
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    write_lock(startup_files(runs / "killed"), pid=ended.pid)
    write_lock(startup_files(runs / "trained"), pid=ended.pid)  # killed after it saved: resume=auto's
    (runs / "trained" / "checkpoints").mkdir()
    write_lock(startup_files(runs / "starting"))  # a live process (this one) that starts now
    write_lock(startup_files(runs / "elsewhere"), pid=ended.pid, host="gpu-node-7")  # cannot be checked
    startup_files(runs / "unlocked")  # no lock: not a start-up this knows was killed
    own = write_lock(startup_files(runs / "own"), pid=ended.pid).parent
    with caplog.at_level(logging.INFO, logger="celebgan.run.lock"):
        lock.remove_abandoned(runs, "train.log", own=own)
    assert sorted(p.name for p in runs.iterdir()) == ["elsewhere", "own", "starting", "trained", "unlocked"]
    assert f"Removed {runs / 'killed'}: the run that process {ended.pid} on host {socket.gethostname()}" in caplog.text
