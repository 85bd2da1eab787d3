"""Faults and bad input: each gives one clear message and loses nothing already written."""
import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import cli_cmd, cli_env

from celebgan.checkpoint import AtomicCheckpointIO
from celebgan.errors import UserError
from celebgan.train import train


def last_ckpt(cfg) -> Path:
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


# --- checkpoints ------------------------------------------------------------------------------

def test_kill_during_checkpoint_write_leaves_previous_last_ckpt_valid(tmp_path):
    # A real SIGKILL halfway through writing the second checkpoint's file.
    script = textwrap.dedent(f"""
        import os, signal, torch
        from lightning.pytorch.plugins.io import TorchCheckpointIO
        from celebgan.checkpoint import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        path = {str(tmp_path / "last.ckpt")!r}
        io.save_checkpoint({{"step": 1, "w": torch.ones(1000)}}, path)
        def dying_write(self, checkpoint, path, storage_options=None):
            with open(path, "wb") as out:
                out.write(b"PK" + b"x" * 5000)
                out.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        TorchCheckpointIO.save_checkpoint = dying_write
        io.save_checkpoint({{"step": 2, "w": torch.zeros(1000)}}, path)
    """)
    result = subprocess.run([sys.executable, "-c", script], env=cli_env(), capture_output=True, timeout=120)
    assert result.returncode == -9
    ckpt = AtomicCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")
    assert ckpt["step"] == 1 and torch.equal(ckpt["w"], torch.ones(1000))


def test_full_disk_while_checkpointing_is_a_clear_error_and_keeps_the_previous_one(make_cfg, monkeypatch):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    cfg = make_cfg("trainer.max_epochs=2")
    real_save, calls = TorchCheckpointIO.save_checkpoint, []

    def save_until_disk_full(self, checkpoint, path, storage_options=None):
        calls.append(path)
        if len(calls) > 1:  # epoch 1's checkpoint: a partial file, then no space left
            Path(path).write_bytes(b"PK\x03\x04partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", save_until_disk_full)
    with pytest.raises(UserError, match="No space left on device") as err:
        train(cfg)
    assert "last.ckpt" in str(err.value) and "previous checkpoint" in str(err.value)
    ckpt = torch.load(last_ckpt(cfg), weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 8
    assert [p.name for p in last_ckpt(cfg).parent.iterdir()] == ["last.ckpt"]  # no temporary left behind


@pytest.mark.parametrize("check_every, stops_after", [(1000, 16), (1, 10)])
def test_non_finite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(make_cfg, monkeypatch,
                                                                              check_every, stops_after):
    # D's weight is poisoned at the start of epoch 1 (optimizer step 8): its first step is training
    # step 5. Read every 1000 steps, the flag is caught before epoch 1's checkpoint (step 16); read
    # every step, at once (step 10), within the epoch.
    from celebgan.guards import NonFiniteGuard

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
    with pytest.raises(UserError, match=r"non-finite loss at training step 5 \(epoch 1") as err:
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
def test_resume_from_another_model_or_image_size(make_cfg, tmp_path, change, key):
    first = make_cfg()
    train(first)
    before = last_ckpt(first).read_bytes()
    with pytest.raises(UserError, match=f"different model or image size:(.|\n)*{key}"):
        train(make_cfg(change, f"resume={last_ckpt(first)}"))
    assert last_ckpt(first).read_bytes() == before


def test_resume_auto_without_an_earlier_run_starts_fresh(make_cfg):
    cfg = make_cfg("resume=auto")
    train(cfg)
    assert torch.load(last_ckpt(cfg), weights_only=True)["global_step"] == 8


# --- configuration ------------------------------------------------------------------------------

def cli(tmp_path, *overrides):
    result = subprocess.run(cli_cmd(*overrides, f"hydra.run.dir={tmp_path / 'run'}"), cwd=tmp_path,
                            env=cli_env(), capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def test_unsupported_img_size_from_the_command_line(tmp_path):
    code, out = cli(tmp_path, "data.img_size=48")
    assert code == 2 and "img_size=48 is not supported" in out and "Traceback" not in out


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
