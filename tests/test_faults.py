"""Faults and bad input: each gives one clear message and loses nothing already written."""
import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import mount_namespace
from conftest import TINY_CLI, cli_env, copy_run, make_celeba

from celebgan.run.checkpoint import AtomicCheckpointIO
from celebgan.errors import UserError
from celebgan.train import train


def last_ckpt(cfg) -> Path:
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


# --- checkpoints ------------------------------------------------------------------------------

@pytest.mark.integration
def test_kill_during_checkpoint_write_leaves_previous_last_ckpt_valid(tmp_path):
    # A real SIGKILL halfway through writing the second checkpoint's file.
    script = textwrap.dedent(f"""
        import os, signal, torch
        from celebgan.run.checkpoint import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        path = {str(tmp_path / "last.ckpt")!r}
        io.save_checkpoint({{"step": 1, "w": torch.ones(1000)}}, path)
        def dying_write(checkpoint, path):
            with open(path, "wb") as out:
                out.write(b"PK" + b"x" * 5000)
                out.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        AtomicCheckpointIO.write_file = staticmethod(dying_write)
        io.save_checkpoint({{"step": 2, "w": torch.zeros(1000)}}, path)
    """)
    result = subprocess.run([sys.executable, "-c", script], env=cli_env(), capture_output=True, timeout=120)
    assert result.returncode == -9
    ckpt = AtomicCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")
    assert ckpt["step"] == 1 and torch.equal(ckpt["w"], torch.ones(1000))


def test_full_disk_while_checkpointing_is_a_clear_error_and_keeps_the_previous_one(make_cfg, monkeypatch):
    cfg = make_cfg("trainer.max_epochs=2")
    real_save, calls = AtomicCheckpointIO.write_file, []

    def save_until_disk_full(checkpoint, path):
        calls.append(path)
        if len(calls) > 1:  # epoch 1's checkpoint: a partial file, then no space left
            Path(path).write_bytes(b"PK\x03\x04partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(checkpoint, path)

    monkeypatch.setattr(AtomicCheckpointIO, "write_file", staticmethod(save_until_disk_full))
    with pytest.raises(UserError, match="No space left on device") as err:
        train(cfg)
    assert "last.ckpt" in str(err.value) and "previous checkpoint" in str(err.value)
    ckpt = torch.load(last_ckpt(cfg), weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 8
    assert [p.name for p in last_ckpt(cfg).parent.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_torch_save_failing_on_a_full_disk_is_the_same_clear_error(make_cfg, monkeypatch):
    # torch.save's C++ writer meets a real full disk (/dev/full refuses every write with ENOSPC) and
    # raises RuntimeErrors ("iostream error", then "unexpected pos"), not an OSError.
    cfg = make_cfg("trainer.max_epochs=2")
    real_save, calls = AtomicCheckpointIO.write_file, []

    def save_onto_a_full_disk(checkpoint, path):
        calls.append(path)
        if len(calls) > 1:
            Path(path).write_bytes(b"PK\x03\x04partial")
            torch.save(checkpoint, "/dev/full")
        return real_save(checkpoint, path)

    monkeypatch.setattr(AtomicCheckpointIO, "write_file", staticmethod(save_onto_a_full_disk))
    with pytest.raises(UserError, match="Could not write .*last.ckpt: the write stopped") as err:
        train(cfg)
    assert "torch.save" in str(err.value) and "previous checkpoint" in str(err.value)
    assert "\n" not in str(err.value)
    ckpt = torch.load(last_ckpt(cfg), weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 8
    assert [p.name for p in last_ckpt(cfg).parent.iterdir()] == ["last.ckpt"]


def test_a_runtime_error_of_another_kind_while_checkpointing_keeps_its_traceback(tmp_path, monkeypatch):
    def bug(checkpoint, path):
        raise RuntimeError("a bug in a callback's state")

    monkeypatch.setattr(AtomicCheckpointIO, "write_file", staticmethod(bug))
    with pytest.raises(RuntimeError, match="a bug in a callback's state"):
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("check_every, stops_after", [(1000, 16), (1, 10)])
def test_non_finite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(make_cfg, monkeypatch,
                                                                              check_every, stops_after):
    # D's weight is poisoned at the start of epoch 1 (optimizer step 8): its first step is training
    # step 5. Read every 1000 steps, the flag is caught before epoch 1's checkpoint (step 16); read
    # every step, at once (step 10), within the epoch.
    from celebgan.run.guards import NonFiniteGuard

    cfg = make_cfg("trainer.max_epochs=3", "+callbacks.poison._target_=probe.Poison",
                   "+callbacks.poison.at_epoch=1", f"callbacks.nonfinite.check_every_n_steps={check_every}")
    check, stopped_at = NonFiniteGuard.check, []

    def recording_check(self, trainer):
        try:
            check(self, trainer)
        except UserError:
            stopped_at.append(trainer.global_step)
            raise

    monkeypatch.setattr(NonFiniteGuard, "check", recording_check)
    with pytest.raises(UserError, match=r"non-finite loss at training step 5 \(epoch 2") as err:
        train(cfg)
    assert stopped_at == [stops_after]
    assert "last.ckpt" in str(err.value)
    ckpt = torch.load(last_ckpt(cfg), weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 8  # epoch 1's diverged weights were not saved
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_malicious_checkpoint_is_refused_and_runs_no_code(make_cfg, tmp_path):
    from probe import Exploit

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"celebgan_config": {}, "state_dict": {}, "payload": Exploit(str(marker))}, path)
    with pytest.raises(UserError, match="Refusing to load"):
        train(make_cfg(f"resume={path}"))
    with pytest.raises(Exception, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(path)  # the path Lightning's trainer.fit(ckpt_path=...) takes
    assert not marker.exists()


# --- resume paths -----------------------------------------------------------------------------

def test_resume_path_that_does_not_exist(make_cfg, tmp_path):
    with pytest.raises(UserError, match="Checkpoint not found.*resume=auto"):
        train(make_cfg(f"resume={tmp_path / 'nope.ckpt'}"))


@pytest.mark.parametrize("change, key", [("model=spectral", "model.discriminator.spectral_norm"),
                                         ("data.img_size=32", "data.img_size")])
def test_resume_from_another_model_or_image_size(make_cfg, tmp_path, change, key, trained_run):
    first = copy_run(trained_run.dir, tmp_path / "first") / "checkpoints" / "last.ckpt"
    before = first.read_bytes()
    with pytest.raises(UserError, match=f"different model, image size or data.attributes:(.|\n)*{key}"):
        train(make_cfg(change, f"resume={first}"))
    assert first.read_bytes() == before


def test_resume_auto_without_an_earlier_run_starts_fresh(make_cfg):
    cfg = make_cfg("resume=auto")
    train(cfg)
    assert torch.load(last_ckpt(cfg), weights_only=True)["global_step"] == 8


# --- configuration ------------------------------------------------------------------------------

# data.img_size=48 from the command line: tests/test_cli_errors.py's table.


@pytest.mark.parametrize("overrides, message", [
    (["trainer.accelerator=cpu", "trainer.devices=9999"], "trainer.devices=9999 CPU processes"),
    (["trainer.accelerator=auto", "trainer.devices=2"], "none is available"),
])
def test_more_devices_than_available(make_cfg, overrides, message):
    if "auto" in overrides[0] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match=message):
        train(make_cfg(*overrides))


def test_gpu_requested_without_one(make_cfg):
    if torch.cuda.device_count() >= 4:
        pytest.skip("four GPUs are present")
    with pytest.raises(UserError, match="trainer.devices=4 but this machine has"):
        train(make_cfg("trainer.accelerator=gpu", "trainer.devices=4"))


# --- the disk -------------------------------------------------------------------------------------

def in_namespace(tmp_path: Path, module: str, args: list[str], **spec) -> tuple[int, str]:
    """Runs `python -m module *args` as root of a new user and mount namespace (tests/mount_namespace.py,
    as `unshare -rm` would), where spec mounts a small tmpfs or a read-only view of a folder for it
    alone without touching the machine's mounts."""
    (tmp_path / "namespace.json").write_text(json.dumps({"module": module, "args": args, **spec}))
    result = subprocess.run([sys.executable, "-c", "import mount_namespace; mount_namespace.main()",
                             str(tmp_path / "namespace.json")], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    if result.returncode == mount_namespace.NO_NAMESPACES and "no user namespaces" in out:
        pytest.skip(f"needs user namespaces: {out.strip()}")
    return result.returncode, out


@pytest.mark.integration
def test_prepare_into_a_read_only_folder_says_to_set_prepared_dir(tmp_path):
    root = tmp_path / "celeba_root"
    make_celeba(root, per_split=2)
    code, out = in_namespace(tmp_path, "celebgan.prepare", ["data=celeba32", f"data.root={root}", "workers=1"],
                             read_only=[str(root)])
    assert code == 2 and "Traceback" not in out, out
    assert "Read-only file system" in out and "data.prepared_dir=" in out


def test_prepare_into_a_folder_of_another_user_says_to_set_prepared_dir(celeba_root, tmp_path, monkeypatch):
    from celebgan.data import prepared as prepare

    def refused(self, *args, **kwargs):  # what a non-root user meets in a folder of root's
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refused)
    with pytest.raises(UserError, match="Permission denied.*data.prepared_dir="):
        prepare.prepare(str(celeba_root), "train", "full", 16, str(tmp_path / "theirs"), workers=1, progress=False)


@pytest.mark.integration
def test_full_disk_while_writing_the_grid_is_one_message_and_leaves_no_temporary(tmp_path):
    # The samples folder on a full 8 KB tmpfs: the epoch's grid (about 3 KB) cannot be written.
    small = tmp_path / "small"
    small.mkdir()
    code, out = in_namespace(tmp_path, "celebgan.train",
                             [*TINY_CLI, f"hydra.run.dir={tmp_path / 'run'}", f"callbacks.sample_grid.dirpath={small}/samples"],
                             tmpfs=[[str(small), "8k"]], mkdir=[f"{small}/samples"], fill=[[f"{small}/filler", 8192]],
                             list=f"{small}/samples")
    assert code == 2 and "Traceback" not in out, out
    assert "Could not write" in out and "epoch_0001.png" in out and "No space left on device" in out
    assert ".epoch_0001.png.tmp" not in out  # the listing of the samples folder


@pytest.mark.integration
def test_full_disk_while_checkpointing_from_the_command_line_is_one_message(tmp_path):
    # checkpoints/ on a 800 KB tmpfs: epoch 0's last.ckpt (about 530 KB) fits, epoch 1's temporary
    # copy beside it does not, and torch.save fails mid-file with its RuntimeErrors.
    small = tmp_path / "small"
    small.mkdir()
    code, out = in_namespace(tmp_path, "celebgan.train",
                             [*TINY_CLI, "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'run'}",
                              f"callbacks.model_checkpoint.dirpath={small}/checkpoints"],
                             tmpfs=[[str(small), "800k"]], list=f"{small}/checkpoints",
                             epoch_of=f"{small}/checkpoints/last.ckpt")
    assert code == 2 and "Traceback" not in out and "During handling" not in out, out
    assert out.count("Could not write") == 1 and "last.ckpt: the write stopped" in out and "resume=auto" in out
    assert ".last.ckpt.tmp" not in out and "epoch 0" in out  # no temporary; the previous checkpoint loads


def test_checkpoints_are_not_staged_in_the_system_temporary_folder(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no_such_folder"))  # any use of it fails
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, tmp_path / "ckpt" / "last.ckpt")
    assert torch.equal(torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["last.ckpt"]


@pytest.mark.integration
def test_temporaries_of_a_killed_run_are_removed_at_the_next_start(make_cfg, caplog):
    cfg = make_cfg()
    folder = last_ckpt(cfg).parent
    folder.mkdir(parents=True)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its process id now belongs to no process
    stale = folder / f".last.ckpt.tmp{finished.pid}"
    stale.write_bytes(b"PK" + b"x" * 1000)
    alive = folder / f".best.ckpt.tmp{os.getppid()}"  # a writer that still runs
    alive.write_bytes(b"PK")
    with caplog.at_level("INFO"):
        train(cfg)
    assert not stale.exists() and alive.exists()
    assert f"Removed {stale}" in caplog.text and f"process {os.getppid()}, which still runs" in caplog.text
