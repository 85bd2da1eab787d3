"""QualityMetrics in training: every_n_epochs > 1, and 2-process DDP, with RandomFeatures in place
of Inception (metrics=random)."""
from pathlib import Path

import pytest
import torch
from conftest import RANDOM_METRICS
from events import scalars

from celebgan.run.checkpoint import load_gan
from celebgan.metrics.features import RandomFeatures, generator_features
from celebgan.metrics.scores import FeatureDistances
from celebgan.train import train

METRICS = [*RANDOM_METRICS, "metrics.n_samples=48", "metrics.n_real=48", "metrics.batch_size=16"]


def ckpt(run: Path, name: str) -> dict:
    return torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)


def test_every_second_epoch_measures_and_keeps_best_at_those_epochs_only(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_epochs=3", "metrics.every_n_epochs=2", *METRICS,
                   f"metrics.cache_dir={tmp_path / 'cache'}")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    fids, kids = scalars(run, "metrics/fid"), scalars(run, "metrics/kid")
    assert len(fids) == len(kids) == 1  # epoch 1 of 0, 1, 2
    epoch_ends = [e.step for e in scalars(run, "epoch/d_loss")]
    assert len(epoch_ends) == 3 and fids[0].step == epoch_ends[1]  # logged at the end of epoch 1
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
