"""Every common Trainer argument is set on the command line without `+`, and reaches the run."""
import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import cli_cmd, cli_env
from omegaconf import open_dict

from celebgan.errors import UserError
from celebgan.train import train


@pytest.mark.integration
def test_common_trainer_keys_need_no_plus_and_reach_the_trainer(tmp_path):
    # Clipping is the model's (model.gradient_clip_*): Lightning cannot clip under manual optimization.
    cmd = cli_cmd(
        "trainer.max_epochs=5", "trainer.max_steps=4", "trainer.limit_train_batches=2",
        "model.gradient_clip_val=0.5", "model.gradient_clip_algorithm=value",
        "trainer.accumulate_grad_batches=1", "trainer.deterministic=true", "trainer.profiler=simple",
        "trainer.check_val_every_n_epoch=2", "trainer.fast_dev_run=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        "+callbacks.settings._target_=probe.TrainerSettings", f"+callbacks.settings.dirpath={tmp_path}")
    result = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    settings = json.loads((tmp_path / "settings.json").read_text())
    # Stopped by max_steps (4 training steps, which Lightning counts as 8 optimizer steps: D and G),
    # before 5 epochs of 2 batches ran out.
    assert settings["max_steps"] == 8 and settings["global_step"] == 8
    assert settings["limit_train_batches"] == 2
    assert settings["deterministic"] is True and settings["profiler"] == "SimpleProfiler"
    assert settings["check_val_every_n_epoch"] == 2 and settings["accumulate_grad_batches"] == 1
    # Lightning clips only under automatic optimization: the GAN clips, the Trainer does not.
    assert settings["trainer_gradient_clip_val"] is None
    assert settings["gradient_clip_val"] == 0.5 and settings["gradient_clip_algorithm"] == "value"


def test_fast_dev_run_trains_one_batch_and_writes_no_checkpoint(make_cfg):
    cfg = make_cfg("trainer.fast_dev_run=true", "trainer.max_epochs=3")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/d_loss"]))
    assert not list(Path(cfg.paths.output_dir).glob("checkpoints/*.ckpt"))


def weight_change(make_cfg, tmp_path, *overrides) -> dict:
    """How far SGD(lr=0.5) moves G's and D's weights in 4 training steps (8 optimizer steps)."""
    cfg = make_cfg("trainer.max_steps=4", "model.ema_half_life=0", *overrides)
    with open_dict(cfg):
        for opt in (cfg.model.g_optimizer, cfg.model.d_optimizer):
            del opt["betas"]
            opt._target_, opt.lr = "torch.optim.SGD", 0.5
        cfg.callbacks.change = {"_target_": "probe.WeightChange", "dirpath": str(tmp_path)}
    train(cfg)
    return json.loads((tmp_path / "change.json").read_text())


def test_gradient_clip_val_bounds_both_networks_steps(make_cfg, tmp_path):
    # Clipped to a norm of 1e-4, each of the 4 steps of a network moves it by at most lr x 1e-4.
    clipped = weight_change(make_cfg, tmp_path, "model.gradient_clip_val=1e-4")
    assert clipped["global_step"] == 8
    assert 0 < clipped["generator"] <= 4 * 0.5 * 1e-4 * 1.001
    assert 0 < clipped["discriminator"] <= 4 * 0.5 * 1e-4 * 1.001
    free = weight_change(make_cfg, tmp_path, "model.gradient_clip_val=null")
    assert free["generator"] > 100 * clipped["generator"] and free["discriminator"] > 100 * clipped["discriminator"]


def test_accumulate_grad_batches_is_one_clear_error(make_cfg):
    with pytest.raises(UserError, match="accumulate_grad_batches=2.*data.batch_size"):
        train(make_cfg("trainer.accumulate_grad_batches=2"))


@pytest.mark.parametrize("key", ["gradient_clip_val=0.5", "gradient_clip_algorithm=value"])
def test_trainer_gradient_clipping_is_one_clear_error_naming_the_model_key(make_cfg, key):
    with pytest.raises(UserError, match=f"Use model.{key}"):
        train(make_cfg(f"trainer.{key}"))
