"""A run that fails before its first training step leaves no run folder, even when the failure comes
after the logger wrote its start-up files; a run that trained keeps its folder."""
from pathlib import Path

import pytest

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
