"""16-mixed on a GPU, with its GradScaler. bf16-mixed on CPU: test_step.py (agrees with fp32) and
test_resume.py (exact resume)."""
import math
from pathlib import Path

import pytest
import torch

from celebgan.train import train


@pytest.mark.gpu
def test_16_mixed_trains_with_a_grad_scaler_on_gpu(make_cfg):
    cfg = make_cfg("trainer.accelerator=gpu", "trainer.precision=16-mixed", "trainer.max_epochs=2")
    metrics = train(cfg)
    assert math.isfinite(metrics["train_epoch/d_loss"]) and math.isfinite(metrics["train_epoch/g_loss"])
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    scaler = ckpt["MixedPrecision"]  # saved with the run, restored on resume
    assert scaler["scale"] > 0 and scaler["_growth_tracker"] >= 0
    # Both optimizers stepped: Adam state exists for G and D.
    assert all(len(opt["state"]) > 0 for opt in ckpt["optimizer_states"])
