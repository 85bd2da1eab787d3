"""QualityMetrics in training: every_n_epochs > 1, and 2-process DDP, with RandomFeatures in place
of Inception (metrics=random)."""
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from conftest import RANDOM_METRICS, random_features
from events import scalars

from celebgan.gan.module import GAN
from celebgan.gan import clock
from celebgan.run.callbacks import QualityMetrics
from celebgan.run.checkpoint import load_gan
from celebgan.metrics.features import RandomFeatures, generator_features
from celebgan.metrics.scores import FeatureDistances
from celebgan.train import train

METRICS = [*RANDOM_METRICS, "metrics.n_samples=48", "metrics.n_real=48", "metrics.batch_size=16"]


@pytest.mark.parametrize("n_dis", [1, 5])
def test_epochs_to_run_counts_training_steps_per_epoch(n_dis):
    # trainer.max_steps=30 training steps, 8 batches an epoch: 4 epochs (the FID cost announced
    # before training counts 4 evaluations), whatever the optimizer steps Lightning counts.
    trainer = SimpleNamespace(max_epochs=100, max_steps=GAN.optimizer_steps(30, n_dis), current_epoch=0,
                              num_training_batches=8)
    assert clock.epochs_to_run(trainer, n_dis) == 4
    assert clock.epochs_to_run(SimpleNamespace(**{**vars(trainer), "max_epochs": 3}), n_dis) == 3
    assert clock.epochs_to_run(SimpleNamespace(**{**vars(trainer), "current_epoch": 1}), n_dis) == 3
    # Before the Trainer has its training data, the epoch's steps come from the caller.
    unknown = SimpleNamespace(**{**vars(trainer), "num_training_batches": math.inf})
    assert clock.epochs_to_run(unknown, n_dis, per_epoch=8) == 4
    # The run's length in training steps: max_steps' or max_epochs', whichever ends it first.
    assert clock.run_steps(trainer, n_dis) == 30
    assert clock.run_steps(SimpleNamespace(**{**vars(trainer), "max_epochs": 3}), n_dis) == 24
    assert clock.run_steps(SimpleNamespace(**{**vars(unknown), "max_steps": -1}), n_dis) is None


def test_optimizer_steps_and_training_steps_invert_each_other():
    for n_dis in (1, 2, 5):
        assert [GAN.training_steps(GAN.optimizer_steps(b, n_dis), n_dis) for b in range(50)] == list(range(50))
    assert GAN.optimizer_steps(10, 1) == 20 and GAN.optimizer_steps(10, 5) == 12


def ckpt(run: Path, name: str) -> dict:
    return torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)


def test_every_second_epoch_measures_and_keeps_best_at_those_epochs_only(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_epochs=3", "metrics.every_n_epochs=2", *METRICS,
                   f"metrics.cache_dir={tmp_path / 'cache'}")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    fids, kids = scalars(run, "metrics/fid"), scalars(run, "metrics/kid")
    assert len(fids) == len(kids) == 1  # epoch 1 of 0, 1, 2
    epoch_ends = [e.step for e in scalars(run, "train_epoch/d_loss")]
    assert len(epoch_ends) == 3 and fids[0].step == epoch_ends[1]  # logged at the end of epoch 2
    best, last = ckpt(run, "best.ckpt"), ckpt(run, "last.ckpt")
    assert best["epoch"] == 1 and best["global_step"] == 2 * 8
    assert last["epoch"] == 2
    state = next(v for k, v in last["callbacks"].items() if "metrics/fid" in k)
    assert state["best_model_score"].item() == pytest.approx(fids[0].value, rel=1e-5)


@pytest.mark.integration
def test_two_process_ddp_logs_one_fid_per_epoch_over_both_ranks_samples(ddp_run):
    run, cache = ddp_run.dir, ddp_run.root / "cache"  # conftest's DDP_RUN: 2 epochs, 48 images measured

    # Logged once per epoch, into the one TensorBoard run that rank 0 writes.
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    fids = scalars(run, "metrics/fid")
    assert len(fids) == 2
    ranks = ddp_run.ranks
    assert ranks[0]["fid"] == ranks[1]["fid"] == pytest.approx(fids[-1].value, rel=1e-6)  # the ranks agree
    best = ckpt(run, "best.ckpt")
    assert best["epoch"] == min(range(2), key=lambda e: fids[e].value)

    # The value is the FID of all 48 generated images (24 per rank, each rank's own latents) against
    # all 48 cached real ones, as one process computes it from the final weights.
    gan, _ = load_gan(run / "checkpoints" / "last.ckpt")
    extractor = RandomFeatures()
    fake = torch.cat([generator_features(gan, extractor, 24, batch_size=16, seed=rank) for rank in range(2)])
    real = torch.load(next(cache.glob("real_*.pt")), weights_only=True)["features"]
    assert real.shape == fake.shape == (48, 64)
    distances = FeatureDistances(64, kid_subset_size=48, kid_subsets=10)
    distances.add_real(real)
    distances.add_fake(fake)
    assert fids[-1].value == pytest.approx(distances.compute()["fid"], rel=1e-4)
    # Not the FID of one rank's share: that would be another number.
    one_rank = FeatureDistances(64, kid_subset_size=24, kid_subsets=10)
    one_rank.add_real(real[0::2])
    one_rank.add_fake(fake[:24])
    assert fids[-1].value != pytest.approx(one_rank.compute()["fid"], rel=1e-3)


class Built(Exception):
    """Raised in place of fitting, once the trainer and its callbacks are built."""


@pytest.mark.parametrize("metrics, measured", [("none", False), ("small", True)])
def test_the_metrics_choice_brings_its_callbacks_and_none_builds_nothing(make_cfg, tmp_path, monkeypatch, metrics,
                                                                        measured):
    import lightning

    built = {}

    def fit(trainer, *args, **kwargs):
        built["callbacks"] = list(trainer.callbacks)
        raise Built

    monkeypatch.setattr(lightning.Trainer, "fit", fit)
    small = ["metrics.n_samples=16", "metrics.n_real=16", f"metrics.cache_dir={tmp_path / 'cache'}"]
    cfg = make_cfg(f"metrics={metrics}", *(small if measured else []))
    if measured:
        random_features(cfg)
    with pytest.raises(Built):
        train(cfg)
    quality = [c for c in built["callbacks"] if isinstance(c, QualityMetrics)]
    checkpoints = sorted(c.filename for c in built["callbacks"] if isinstance(c, ModelCheckpoint))
    assert len(quality) == (1 if measured else 0)
    assert checkpoints == (["best", "last"] if measured else ["last"])
    if measured:
        assert quality[0].n_samples == 16 and quality[0].every_n_epochs == 1  # metrics.* reach the callback
