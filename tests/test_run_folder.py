"""A run that fails before its first training step leaves no run folder, even when the failure comes
after the logger wrote its start-up files; a run that trained keeps its folder; a run whose folder
is deleted while it trains stops with one message."""
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_cmd, cli_env

from celebgan.errors import UserError
from celebgan.gan.module import GAN
from celebgan.train import removed_if_unused, train


def fail(*args, **kwargs):
    raise UserError("stopped by the test")


def train_in_hydra_folder(cfg) -> Path:
    """train(cfg) as the command runs it: in a run folder that already holds Hydra's files."""
    run = Path(cfg.paths.output_dir)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 42\n")
    (run / "train.log").write_text("")
    with pytest.raises(UserError, match="stopped by the test"), removed_if_unused(run, "train.log"):
        train(cfg)
    return run


def test_a_failure_inside_fit_before_the_first_step_leaves_no_folder(make_cfg, monkeypatch):
    monkeypatch.setattr(GAN, "on_train_start", fail)  # after the logger declared the run
    run = train_in_hydra_folder(make_cfg())
    assert not run.exists()


def test_a_run_that_logged_a_step_keeps_its_folder(make_cfg, monkeypatch):
    def fail_at_third_step(self, outputs, batch, batch_idx):
        if batch_idx == 2:  # two steps logged, no grid or checkpoint yet
            fail()

    monkeypatch.setattr(GAN, "on_train_batch_end", fail_at_third_step)
    run = train_in_hydra_folder(make_cfg("trainer.log_every_n_steps=1"))
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("events.")) == [
        ".hydra", "hparams.yaml", "train.log"]
    assert list(run.glob("events.out.tfevents.*"))


def delete_at(run: Path, step: int) -> list[str]:
    return ["+callbacks.delete._target_=probe.DeleteRunAt", f"+callbacks.delete.step={step}",
            f"+callbacks.delete.dirpath={run}"]


def test_a_run_whose_folder_is_deleted_stops_at_once_and_recreates_nothing(make_cfg, tmp_path):
    run = tmp_path / "run"  # make_cfg's
    # No TensorBoard write before epoch 1's grid and checkpoint, which would make their folders anew.
    cfg = make_cfg("trainer.max_epochs=2", "trainer.log_every_n_steps=50", *delete_at(run, 3))
    with pytest.raises(UserError, match=rf"The run folder {run} was deleted while the run trained \(after training "
                                        r"step 3\).*Nothing of the run is left to resume"):
        train(cfg)
    assert not run.exists()  # epoch 1's grid and checkpoint (step 4) were never written into a new one


def test_a_deleted_run_folder_made_anew_at_once_is_still_the_deleted_one(make_cfg, tmp_path):
    # A late write (TensorBoard's writer thread) can make the folder again before the run looks; the
    # file system may give the new folder the deleted one's inode number, unless the run holds it.
    run = tmp_path / "run"
    cfg = make_cfg("trainer.max_epochs=2", "trainer.log_every_n_steps=50", *delete_at(run, 3),
                   "+callbacks.delete.remake=true")
    with pytest.raises(UserError, match=rf"The run folder {run} was deleted while the run trained \(after training "
                                        r"step 3\)"):
        train(cfg)


@pytest.mark.integration
def test_a_run_folder_deleted_while_training_ends_in_one_message(tmp_path):
    run = tmp_path / "runs" / "deleted"
    result = subprocess.run(cli_cmd("trainer.max_epochs=2", "trainer.log_every_n_steps=1", f"hydra.run.dir={run}",
                                    *delete_at(run, 2)), cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Exception in thread" not in result.stderr
    assert result.stderr.count("Error: ") == 1
    assert f"Error: The run folder {run} was deleted while the run trained (after training step 2)" in result.stderr
    assert not run.exists()


def test_a_run_whose_lock_is_removed_stops_and_keeps_its_checkpoint(make_cfg, tmp_path):
    run = tmp_path / "run"
    cfg = make_cfg("trainer.max_epochs=2", "+callbacks.delete._target_=probe.DeleteRunAt", "+callbacks.delete.step=5",
                   f"+callbacks.delete.dirpath={run / 'run.lock'}", "+callbacks.delete.file=true")
    with pytest.raises(UserError, match=r"run.lock was removed \(or taken by another process\) while the run trained "
                                        r"\(after training step 5\).*resume=auto continues from it"):
        train(cfg)
    assert (run / "checkpoints" / "last.ckpt").is_file()  # epoch 1's


@pytest.mark.integration
def test_a_failed_first_command_leaves_the_folder_it_ran_in_as_it_was(tmp_path):
    # The default run folder, outputs/runs/TIME_MODEL_DATA, in a folder that had none.
    result = subprocess.run([sys.executable, "-m", "celebgan.train", "data=celeba32",
                             f"data.root={tmp_path / 'nowhere'}"], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Error: " in result.stderr, result.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []  # no outputs/runs/ left behind
