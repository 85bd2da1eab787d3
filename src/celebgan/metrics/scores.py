"""FID and KID (torchmetrics) and precision/recall, computed from features (features.py).

FID and KID are torchmetrics' own implementations, fed with features rather than images, so that
real features are extracted once per data set and cached on disk (feature_cache.py).
"""
import time
import warnings

import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from celebgan.errors import UserError


class _Precomputed(nn.Module):
    """Identity 'feature extractor': torchmetrics receives features, not images."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FeatureDistances(nn.Module):
    """FID and KID (torchmetrics) between a fixed real feature set and fakes added batch by batch.

    Under DDP each rank adds its shard of the real features and its own fakes; torchmetrics
    gathers the states in compute(). reset() forgets the fakes and keeps the reals.
    """

    def __init__(self, num_features: int, *, kid_subset_size: int = 1000, kid_subsets: int = 100,
                 sync_on_compute: bool = True):
        super().__init__()
        self.fid = FrechetInceptionDistance(feature=_Precomputed(num_features), reset_real_features=False,
                                            sync_on_compute=sync_on_compute)
        with warnings.catch_warnings():  # "will save all extracted features": it is meant to
            warnings.filterwarnings("ignore", message=".*save all extracted features.*")
            self.kid = KernelInceptionDistance(feature=_Precomputed(num_features), reset_real_features=False,
                                               subset_size=kid_subset_size, subsets=kid_subsets,
                                               sync_on_compute=sync_on_compute)

    def add_real(self, features: torch.Tensor) -> None:
        for chunk in features.split(4096):
            self.fid.update(chunk, real=True)
            self.kid.update(chunk, real=True)

    def add_fake(self, features: torch.Tensor) -> None:
        self.fid.update(features, real=False)
        self.kid.update(features, real=False)

    def compute_fid(self) -> dict[str, float]:
        return {"fid": float(self.fid.compute())}

    def compute_kid(self) -> dict[str, float]:
        # KID draws its subsets from the global RNG; fork it so measuring never changes training.
        with isolate_rng(include_cuda=False):
            torch.manual_seed(0)
            kid_mean, kid_std = self.kid.compute()
        return {"kid": float(kid_mean), "kid_std": float(kid_std)}

    def compute(self) -> dict[str, float]:
        kid = self.compute_kid()
        return self.compute_fid() | kid

    def reset(self) -> None:
        self.fid.reset()
        self.kid.reset()


def scores_seconds(num_features: int, *, kid_subset_size: int, kid_subsets: int,
                   device: torch.device | str = "cpu") -> float:
    """Seconds of one FID/KID computation here, timed on random features: FID's matrix square root
    (num_features squared) and KID's subsets cost about the same whatever the number of images.
    One process's own timing: nothing is gathered from the other ranks of a DDP run."""
    rng = torch.Generator().manual_seed(0)
    n = max(kid_subset_size, 2)
    real, fake = (torch.randn(n, num_features, generator=rng).to(device) for _ in range(2))

    def seconds(subsets: int) -> float:
        distances = FeatureDistances(num_features, kid_subset_size=n, kid_subsets=subsets,
                                     sync_on_compute=False).to(device)
        distances.add_real(real)
        distances.add_fake(fake)
        start = time.perf_counter()
        distances.compute()
        return time.perf_counter() - start

    # Timed with 1 and 3 KID subsets and extrapolated: timing all of them would cost what the
    # scores cost (100 subsets of 1,000: minutes on a loaded CPU), before the estimate is said.
    if kid_subsets <= 3:
        return seconds(kid_subsets)
    one, three = seconds(1), seconds(3)
    per_subset = max((three - one) / 2, 0.0)
    return max(one - per_subset, 0.0) + kid_subsets * per_subset


# ---------------------------------------------------------------------------------------------
# Improved precision and recall (Kynkaanniemi et al. 2019).
#   Each sample of a set gets a ball whose radius is the distance to its k-th nearest neighbour in
#   that set. precision = share of fakes inside some real ball; recall = share of reals inside
#   some fake ball. k = 3, as in the paper.
#   Written here rather than taken from torch-fidelity (same definition): its shares are float32
#   means, a few 1e-8 away from these exact ones, and its full version holds an N x N distance matrix.
def _knn_radii(features: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    return torch.cat([torch.cdist(rows, features).kthvalue(k + 1, dim=1).values  # +1: itself
                      for rows in features.split(batch)])


def _inside_any_ball(query: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([(torch.cdist(rows, centres) <= radii[None]).any(dim=1) for rows in query.split(batch)])


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3, batch: int = 1024) -> dict[str, float]:
    """(N, F) real and (M, F) fake features -> {"precision", "recall"} in [0, 1]."""
    if min(len(real), len(fake)) <= k:
        raise UserError(f"precision/recall with k={k} needs more than {k} real and fake samples.")
    real, fake = real.double(), fake.double()  # exact ties (a sample on a ball's edge) stay inside
    precision = _inside_any_ball(fake, real, _knn_radii(real, k, batch), batch).double().mean()
    recall = _inside_any_ball(real, fake, _knn_radii(fake, k, batch), batch).double().mean()
    return {"precision": float(precision), "recall": float(recall)}
