"""One metrics pipeline (celebgan.metrics.registry): the training callback, `celebgan.evaluate` and the
benchmarks measure a generator through calc_metrics, so one generator against one set of real
features gives one FID and one KID wherever it is measured."""
import shutil
from types import SimpleNamespace

import pytest
import torch

from celebgan.errors import UserError
from celebgan.metrics import registry
from celebgan.metrics.features import RandomFeatures, generator_features
from celebgan.metrics.scores import FeatureDistances
from celebgan.run.callbacks import QualityMetrics
from celebgan.run.checkpoint import load_gan

from test_atomic import load_script
from test_evaluate import eval_cfg

# 40 generated images in one batch of latents (quality.py generates in batches of 50) against 30 real ones.
N_FAKE, N_REAL, BATCH = 40, 30, 50


def test_the_callback_evaluate_and_the_benchmarks_give_one_fid_through_the_registry(trained_run, tmp_path,
                                                                                    monkeypatch):
    asked = []  # every caller's FID and KID go through the registry's metrics
    for name in ("fid", "kid"):
        monkeypatch.setitem(registry.METRICS, name,
                            lambda m, metric=registry.METRICS[name], name=name: asked.append(name) or metric(m))
    from celebgan.evaluate import evaluate

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    shutil.copy(trained_run.ckpt, ckpt)
    cache = tmp_path / "cache"
    evaluated = evaluate(eval_cfg(f"ckpt={ckpt}", f"n_samples={N_FAKE}", f"n_real={N_REAL}", "pr_samples=20",
                                  "real_split=test", "device=cpu", f"metrics.cache_dir={cache}",
                                  f"metrics.batch_size={BATCH}"))["metrics"]
    real = torch.load(next(cache.glob("real_*.pt")), weights_only=True)["features"]  # what evaluate measured against
    assert real.shape == (N_REAL, 64)
    gan, _ = load_gan(ckpt)

    # The callback at an epoch's end, from the same real features.
    callback = QualityMetrics(every_n_epochs=1, n_samples=N_FAKE, n_real=N_REAL, real_split="test",
                              feature_extractor=RandomFeatures, cache_dir=str(cache), batch_size=BATCH)
    callback.real = real
    logged = {}
    monkeypatch.setattr(gan, "log_dict", lambda values, **kwargs: logged.update(values))
    callback.on_train_epoch_end(SimpleNamespace(global_rank=0, world_size=1, current_epoch=0), gan)

    # benchmarks/quality.py's scorer of a trained run.
    benchmark = load_script("quality").measure(real, RandomFeatures(), N_FAKE, gan=gan)

    assert asked == ["fid", "kid"] * 3
    assert logged["metrics/fid"] == evaluated["fid"] == benchmark["fid"]
    assert logged["metrics/kid"] == evaluated["kid"] == benchmark["kid"]
    # The number FID had when each caller built it by hand: the seed-0 latents' images, KID in subsets of 30.
    fake = generator_features(gan, RandomFeatures(), N_FAKE, batch_size=BATCH, seed=0)
    by_hand = FeatureDistances(64, kid_subset_size=N_REAL, kid_subsets=100)
    by_hand.add_real(real)
    by_hand.add_fake(fake)
    assert by_hand.compute() == {"fid": evaluated["fid"], "kid": evaluated["kid"], "kid_std": benchmark["kid_std"]}
    # benchmarks/conditional.py's per-condition FID of features it made: the same number for the same ones.
    assert load_script("conditional").fid(real, fake) == evaluated["fid"]


def test_the_registry_names_its_metrics_and_computes_only_those_asked():
    rng = torch.Generator().manual_seed(0)
    real, fake = torch.randn(40, 8, generator=rng), torch.randn(30, 8, generator=rng) + 0.5
    scores = registry.calc_metrics(["fid", "kid", "pr"], real=real, fake=fake, kid_subset_size=1000, kid_subsets=10)
    assert list(scores) == ["fid", "kid", "kid_std", "precision", "recall"]
    assert registry.calc_metrics(["fid"], real=real, fake=fake) == {"fid": scores["fid"]}
    assert registry.kid_subset(1000, len(real), len(fake)) == 30  # no larger than either set
    with pytest.raises(UserError, match="Unknown metrics \\['is'\\]"):
        registry.calc_metrics(["is"], real=real, fake=fake)
    # Precision/recall: the first pr_samples of each set.
    assert registry.calc_metrics(["pr"], real=real, fake=fake, pr_samples=10) == \
        registry.calc_metrics(["pr"], real=real[:10], fake=fake[:10])
