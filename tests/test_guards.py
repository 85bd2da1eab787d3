"""The divergence watch and the NaN guard: healthy runs pass in silence, a diverged or collapsed run
is named with its step, and nothing is written from diverged weights."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from celebgan import CONFIG_DIR
from celebgan.errors import UserError
from celebgan.run.guards import grid_health
from celebgan.train import train

ROOT = Path(__file__).resolve().parents[1]
WATCH = OmegaConf.load(CONFIG_DIR / "callbacks" / "divergence.yaml").divergence
EXPLODE = ["model.d_optimizer.lr=1e6", "model.g_optimizer.lr=1e6"]


def tiles(png: Path, size: int) -> torch.Tensor:
    """The (64, 3, S, S) images in [-1, 1] of an 8x8 grid PNG that make_grid drew (2px gaps)."""
    a = np.asarray(Image.open(png).convert("RGB"))
    images = [a[2 + r * (size + 2):2 + r * (size + 2) + size, 2 + c * (size + 2):2 + c * (size + 2) + size]
              for r in range(8) for c in range(8)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.mark.parametrize("png, size", [("demo_grid.png", 32), ("grid_64px.png", 64)])
def test_grids_of_healthy_runs_are_far_from_the_thresholds(png, size):
    saturated, spread = grid_health(tiles(ROOT / "docs" / png, size))  # make demo's and high_lr's results
    assert saturated < WATCH.grid_saturated_share / 10
    assert spread > WATCH.grid_min_spread * 10


def test_a_grid_that_collapses_after_it_was_varied_is_reported(caplog):
    from types import SimpleNamespace

    from celebgan.run.guards import DivergenceWatch

    watch = DivergenceWatch(action="stop")
    varied = torch.rand(16, 3, 8, 8) * 1.6 - 0.8
    collapsed = varied[:1].expand(16, -1, -1, -1)
    trainer = SimpleNamespace(current_epoch=3, is_global_zero=True, checkpoint_callbacks=[])

    def epoch_end(images):
        module = SimpleNamespace(fixed_z=None, fixed_labels=None, steps_done=40, sample=lambda z, labels: images)
        watch.on_train_epoch_end(trainer, module)

    epoch_end(collapsed)  # as a freshly initialised G draws: no collapse without variety before
    epoch_end(varied)
    with pytest.raises(UserError, match="near-identical at the end of epoch 4 \\(training step 40\\)"):
        epoch_end(collapsed)


def test_saturated_and_collapsed_grids_are_recognised():
    binary = torch.randint(0, 2, (16, 3, 8, 8)).float() * 2 - 1  # pure black and white pixels
    assert grid_health(binary)[0] > WATCH.grid_saturated_share
    same = torch.rand(1, 3, 8, 8).expand(16, -1, -1, -1) * 1.6 - 0.8  # one image, 16 times
    assert grid_health(same)[1] < WATCH.grid_min_spread


def test_a_healthy_run_trains_without_a_warning(make_cfg, caplog):
    # The exploded run's watch below (a window of 4 steps, checked every step), on a healthy run:
    # every check runs and none fires.
    with caplog.at_level(logging.INFO):
        train(make_cfg("trainer.max_epochs=3", "callbacks.divergence.saturation_steps=4",
                       "callbacks.divergence.check_every_n_steps=1"))
    assert "epoch 3/3" in caplog.text and "diverged" not in caplog.text and "a loss reached" not in caplog.text


def test_an_exploded_run_is_named_with_its_step_and_goes_on_by_default(make_cfg, caplog):
    cfg = make_cfg(*EXPLODE, "trainer.max_epochs=3", "callbacks.divergence.saturation_steps=4",
                   "callbacks.divergence.check_every_n_steps=1")
    train(cfg)
    assert "a loss reached" in caplog.text and "at training step 2 " in caplog.text
    assert "grid's pixel values are at black or white at the end of epoch 1" in caplog.text
    assert "on every one of 4 training steps up to step" in caplog.text
    assert caplog.text.count("Training looks diverged") == 3  # each kind once, not every check


def test_an_exploded_run_with_action_stop_ends_before_any_grid_or_checkpoint(make_cfg):
    cfg = make_cfg(*EXPLODE, "callbacks.divergence.action=stop")
    with pytest.raises(UserError, match="a loss reached .* at training step 2 .*no checkpoint had been written"):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    assert not list(run.rglob("*.png")) and not list(run.rglob("*.ckpt"))


def test_a_nan_in_the_first_epoch_names_no_checkpoint_and_draws_no_grid(make_cfg):
    cfg = make_cfg("+callbacks.poison._target_=probe.Poison", "+callbacks.poison.at_epoch=0")
    with pytest.raises(UserError, match="non-finite loss at training step 1 .*no checkpoint had been written yet"):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    assert not list(run.rglob("*.png")) and not list(run.rglob("*.ckpt"))
