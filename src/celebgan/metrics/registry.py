"""The one registry of metrics: every FID, KID, precision/recall and obedience that celebgan reports
(QualityMetrics during training, `celebgan.evaluate`, benchmarks/quality.py, benchmarks/conditional.py)
is `calc_metrics` of some of these names, in the spirit of StyleGAN2-ADA's `metric_main.calc_metric`.

A measurement generates its images once and computes every feature metric asked for from the same
features; FID's and KID's torchmetrics states are built once for both:

    fid               {"fid"}: Frechet distance of the features (torchmetrics)
    kid               {"kid", "kid_std"}: KID's mean and spread over `kid_subsets` subsets of
                      kid_subset(kid_subset_size, reals, fakes) images, drawn with seed 0 (the global RNG left alone)
    pr                {"precision", "recall"}: Kynkaenniemi et al.'s, k = pr_k, on the first pr_samples of each set
    obedience         {"obedience": Judge(gan)}: a conditional generator's obedience (judge.py), from its own latents

The real side is features (feature_cache.RealFeatureCache of a data module's split: the caller reads
them once and keeps them for every measurement); the generated side is `gan`'s sampler through
`extractor` (features.generator_features: the EMA generator in eval mode, seeded latents, the global RNG
left alone), or features the caller made itself (a real split as the fake side of an anchor, images
asked for chosen attributes).
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from celebgan.errors import UserError
from celebgan.metrics.features import generator_features
from celebgan.metrics.scores import FeatureDistances, precision_recall


def kid_subset(kid_subset_size: int, num_real: int, num_fake: int) -> int:
    """KID's subset size: the one asked for, or fewer when either set (over all processes) is smaller."""
    return min(kid_subset_size, num_real, num_fake)


@dataclass
class Measurement:
    """What every metric of one `calc_metrics` call reads: this process's real and generated features,
    the sizes of both sets over all processes, the settings, and (for obedience) the generator and judge."""

    real: torch.Tensor          # (N / world, F) this process's share of the real features
    fake: torch.Tensor | None   # (M / world, F) this process's generated features; None when no feature metric is asked
    num_real: int
    num_fake: int
    kid_subset_size: int
    kid_subsets: int
    pr_k: int
    pr_samples: int
    device: torch.device | str
    sync_on_compute: bool
    gan: nn.Module | None
    judge: Callable | None

    @cached_property
    def distances(self) -> FeatureDistances:
        """FID's and KID's states of both sets, built once for whichever of them is asked for."""
        distances = FeatureDistances(self.real.shape[1], sync_on_compute=self.sync_on_compute,
                                     kid_subset_size=kid_subset(self.kid_subset_size, self.num_real, self.num_fake),
                                     kid_subsets=self.kid_subsets).to(self.device)
        distances.add_real(self.real.to(self.device))
        distances.add_fake(self.fake.to(self.device))
        return distances


def _precision_recall(m: Measurement) -> dict[str, float]:
    n = min(m.pr_samples, len(m.real), len(m.fake))
    return precision_recall(m.real[:n], m.fake[:n], k=m.pr_k)


def _obedience(m: Measurement) -> dict[str, dict]:
    if m.judge is None or m.gan is None:
        raise ValueError("obedience is measured with a judge (metrics.judge.Judge) of a generator: pass gan and judge.")
    return {"obedience": m.judge(m.gan)}


METRICS: dict[str, Callable[[Measurement], dict]] = {
    "fid": lambda m: m.distances.compute_fid(),
    "kid": lambda m: m.distances.compute_kid(),
    "pr": _precision_recall,
    "obedience": _obedience,
}
FEATURE_METRICS = ("fid", "kid", "pr")  # read the features; obedience reads the generator


def calc_metrics(names: Sequence[str], *, real: torch.Tensor, fake: torch.Tensor | None = None,
                 gan: nn.Module | None = None, extractor: nn.Module | None = None, n_samples: int | None = None,
                 seed: int = 0, batch_size: int = 100, rank: int = 0, world_size: int = 1,
                 kid_subset_size: int = 1000, kid_subsets: int = 100, pr_k: int = 3, pr_samples: int = 10_000,
                 judge: Callable | None = None, device: torch.device | str = "cpu",
                 sync_on_compute: bool = True) -> dict:
    """The named metrics (METRICS) of one measurement, merged into one dict in the order asked.

    real: (N, F) features of the real images (all of them: under DDP this process adds real[rank::world_size]);
    fake: (M, F) generated features made by the caller, or None: n_samples images of `gan` through
    `extractor`, of which this process generates its share from latents of `seed` in batches of batch_size
    (the seed, its batches and its order decide the numbers); device: where FID's and KID's states
    compute (and, under DDP, gather: sync_on_compute); judge: for obedience, a prepared metrics.judge.Judge.
    """
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise UserError(f"Unknown metrics {unknown}: celebgan measures {sorted(METRICS)}.")
    if any(name in FEATURE_METRICS for name in names) and fake is None:
        if gan is None or extractor is None or n_samples is None:
            raise ValueError("calc_metrics needs fake features, or gan, extractor and n_samples to make them.")
        n_local = n_samples // world_size + (rank < n_samples % world_size)
        fake = generator_features(gan, extractor, n_local, batch_size=batch_size, seed=seed)
    measurement = Measurement(
        real=real[rank::world_size], fake=fake, num_real=len(real),
        num_fake=n_samples if n_samples is not None else len(fake) if fake is not None else 0,
        kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, pr_k=pr_k, pr_samples=pr_samples, device=device,
        sync_on_compute=sync_on_compute, gan=gan, judge=judge)
    results: dict = {}
    for name in names:
        results |= METRICS[name](measurement)
    return results
