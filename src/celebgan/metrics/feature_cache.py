"""Features of real images, extracted once per data set and kept on disk."""
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from celebgan.metrics.features import extract_features
from celebgan.io import atomic_write

log = logging.getLogger(__name__)


class RealFeatureCache:
    """Features of real images, computed once per (dataset, split, crop, img_size, count,
    extractor) and stored as `cache_dir/real_<...>.pt` with the fingerprint of their source.

    A stored file whose fingerprint differs from the data's current one (images added, removed or
    rewritten; another renderer; another extractor) is recomputed and replaced. Writes go to a
    temporary name and are renamed into place.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir).expanduser()

    def path(self, fingerprint: dict) -> Path:
        f = fingerprint
        return self.cache_dir / f"real_{f['dataset']}_{f['split']}_{f['crop']}_{f['img_size']}px_{f['num_images']}.pt"

    def fingerprint(self, datamodule, split: str, limit: int | None, extractor: nn.Module) -> dict:
        return {**datamodule.fingerprint(split, limit),
                "extractor": getattr(extractor, "name", type(extractor).__name__)}

    def has(self, datamodule, split: str, limit: int | None, extractor: nn.Module) -> bool:
        """Whether get() would read these features from disk rather than compute them."""
        fingerprint = self.fingerprint(datamodule, split, limit, extractor)
        path = self.path(fingerprint)
        if not path.is_file():
            return False
        try:
            return torch.load(path, map_location="cpu", weights_only=True).get("fingerprint") == fingerprint
        except Exception:  # damaged: get() recomputes it
            return False

    def get(self, datamodule, split: str, limit: int | None, extractor: nn.Module, *,
            batch_size: int = 100, device: torch.device | str = "cpu") -> torch.Tensor:
        """(N, F) features of `limit` real images of `split` (all of a CelebA split when None)."""
        fingerprint = self.fingerprint(datamodule, split, limit, extractor)
        path = self.path(fingerprint)
        if path.is_file():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # a damaged cache file is recomputed, never fatal
                log.warning("Unreadable real-statistics cache %s (%s); recomputing.", path, err)
                stored = None
            if stored is not None and stored.get("fingerprint") == fingerprint:
                log.info("Real features: reusing %s", path)
                return stored["features"]
            if stored is not None:
                log.info("Real features: %s was computed from other data; recomputing.", path)
        dataset = datamodule.eval_dataset(split, limit)
        features = extract_features(extractor, dataset, batch_size=batch_size, device=device,
                                    num_workers=getattr(datamodule, "num_workers", 0),
                                    what=f"real features ({split})")
        with atomic_write(path) as tmp:
            torch.save({"fingerprint": fingerprint, "features": features}, tmp)
        with atomic_write(path.with_suffix(".json")) as tmp:  # for people: what the .pt was computed from
            tmp.write_text(json.dumps(fingerprint, indent=2) + "\n")
        log.info("Real features: wrote %s", path)
        return features
