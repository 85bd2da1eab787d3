"""Evaluate a checkpoint: `python -m celebgan.evaluate ckpt=PATH [n=50000 ...]`.

FID and KID (torchmetrics) and precision/recall (Kynkaanniemi et al. 2019) of the checkpoint's
EMA generator in eval mode against cached features of real images of its data set. Before the work
it prints the protocol and an estimate of its time measured on this machine; then the numbers, and
writes them as JSON.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from celebgan.cli import command
from celebgan.errors import UserError, check_whole
from celebgan.io import atomic_write

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# The TTUR and mimicry protocol: 50,000 generated against 50,000 real images of the training split.
STANDARD = {"n_samples": 50_000, "n_real": 50_000, "real_split": "train"}


def evaluate(cfg: DictConfig) -> dict:
    """The command's work, from its composed config (conf/evaluate.yaml): the metrics of cfg.ckpt."""
    if OmegaConf.is_missing(cfg, "ckpt") or cfg.ckpt is None:
        raise UserError("celebgan.evaluate needs a checkpoint: ckpt=RUN_DIR/checkpoints/last.ckpt "
                        "(or best.ckpt) of a celebgan.train run.")
    from celebgan.run.plugins import trust_modules

    trust_modules(cfg.get("trust"))  # the reader's choice, before the checkpoint is read
    m = cfg.metrics
    return evaluate_checkpoint(
        cfg.ckpt, n_samples=cfg.n_samples, n_real=cfg.n_real, real_split=cfg.real_split, pr_samples=cfg.pr_samples,
        pr_k=cfg.pr_k, data_root=cfg.data_root, device=cfg.device, output=cfg.output,
        feature_extractor=hydra.utils.instantiate(m.feature_extractor), cache_dir=m.cache_dir,
        batch_size=m.batch_size, seed=m.seed, kid_subsets=m.kid_subsets, kid_subset_size=m.kid_subset_size,
        obedience=OmegaConf.to_container(cfg.obedience, resolve=True))


def evaluate_checkpoint(ckpt: str, *, n_samples: int, n_real: int | None, real_split: str, pr_samples: int,
                        pr_k: int, data_root: str | None, device: str, output: str | None,
                        feature_extractor: Callable[[], torch.nn.Module], cache_dir: str, batch_size: int,
                        seed: int, kid_subsets: int, kid_subset_size: int, obedience: dict | None = None) -> dict:
    """Compute and print the metrics of a checkpoint; returns the JSON-ready results.
    feature_extractor builds the feature network (a partial: built only once the checks pass).
    obedience: for a conditional checkpoint, Judge's settings (n: faces per attribute and side, 0 = off)."""
    # torch and its libraries: imported once the command runs, not for its --help
    from celebgan.data.modules import dataset_name
    from celebgan.devices import pick_device
    from celebgan.metrics.feature_cache import RealFeatureCache
    from celebgan.metrics.judge import Judge, check_obedience
    from celebgan.metrics.registry import calc_metrics, kid_subset
    from celebgan.run.checkpoint import build_datamodule, load_gan, real_subset

    # Every setting against its meaning, before the checkpoint is read or anything is measured.
    for key, value in (("n_samples", n_samples), ("pr_samples", pr_samples)):
        check_whole(key, value, 2)
    if n_real is not None:
        check_whole("n_real", n_real, 2, " (or null: the whole split)")
    check_whole("pr_k", pr_k, 1)
    for key, value, minimum in (("metrics.batch_size", batch_size, 1), ("metrics.seed", seed, 0),
                                ("metrics.kid_subsets", kid_subsets, 1),
                                ("metrics.kid_subset_size", kid_subset_size, 2)):
        check_whole(key, value, minimum)
    obedience = dict(obedience or {"n": 0})
    check_obedience(obedience)
    device = pick_device(device)
    model, config = load_gan(ckpt)
    datamodule = build_datamodule(config, root=data_root)
    # What is measured, said at once; the estimate follows once the feature network is built and
    # timed on a few images (seconds), before the measurement itself.
    announce_protocol(n_samples=n_samples, n_real=n_real, real_split=real_split, kid_subsets=kid_subsets,
                      kid_subset_size=kid_subset_size)
    extractor = feature_extractor().to(device)
    model.to(device)

    cache = RealFeatureCache(cache_dir)
    announce(model, extractor, n_samples=n_samples, n_real=n_real, real_split=real_split,
             cached=cache.has(datamodule, real_split, n_real, extractor), kid_subsets=kid_subsets,
             kid_subset_size=kid_subset_size, device=device, batch_size=batch_size)
    real = cache.get(datamodule, real_split, n_real, extractor, batch_size=batch_size, device=device)
    scores = calc_metrics(["fid", "kid", "pr"], real=real, gan=model, extractor=extractor, n_samples=n_samples,
                          seed=seed, batch_size=batch_size, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
                          pr_k=pr_k, pr_samples=pr_samples)
    # KID's spread is its std over random subsets. Subsets holding more than half of the smaller set
    # overlap so much (all of it, when as large) that the spread says nothing: it is not reported.
    subset_size = kid_subset(kid_subset_size, len(real), n_samples)
    spread = 2 * subset_size <= min(len(real), n_samples)
    if not spread:
        scores["kid_std"] = None
    n_pr = min(pr_samples, len(real), n_samples)

    data = config["data"]
    protocol = {
        "checkpoint": str(Path(ckpt).expanduser().resolve()),
        "generator": "EMA" if model.generator_ema is not None else "G (no EMA)",
        "dataset": dataset_name(data),
        "img_size": data["img_size"],
        "crop": data.get("crop", "full"),
        "real_split": real_split,
        "num_real": len(real),
        "num_fake": n_samples,
        "feature_extractor": getattr(extractor, "name", type(extractor).__name__),
        "kid_subsets": f"{kid_subsets} x {subset_size}",
        "precision_recall": f"k={pr_k} on {n_pr} real and {n_pr} generated",
        "standard": standard(n_samples, n_real, real_split),
    }
    results = {"protocol": protocol, "metrics": scores}
    width = max(map(len, protocol))
    print("Protocol")
    for key, value in protocol.items():
        print(f"  {key:<{width}}  {value}")
    print("Results")
    print(f"  FID        {scores['fid']:.3f}")
    if spread:
        print(f"  KID        {scores['kid']:.5f} +- {scores['kid_std']:.5f} "
              f"(std over {kid_subsets} subsets)")
    else:
        print(f"  KID        {scores['kid']:.5f} (no spread: subsets of {subset_size} of {min(len(real), n_samples)} "
              f"images overlap; it needs at least {2 * subset_size} real and generated images)")
    print(f"  precision  {scores['precision']:.4f}")
    print(f"  recall     {scores['recall']:.4f}")
    if not protocol["standard"]:
        print(f"  (not the standard protocol: {n_samples} generated vs {len(real)} real images; n=50000 measures it)")
    if model.attr_names and obedience["n"] > 0:
        data_config = {**config["data"], **({"root": data_root} if data_root else {})}
        judge = Judge(data_config=data_config, read=real_subset, **obedience)
        results |= calc_metrics(["obedience"], real=real, gan=model, judge=judge)
        print_obedience(results["obedience"], judge.n)

    out = Path(output).expanduser() if output else Path(ckpt).expanduser().with_suffix(".eval.json")
    print(f"Wrote {write_results(results, out)}")
    return results


def standard(n_samples: int, n_real: int | None, real_split: str) -> bool:
    """The measurement is the TTUR and mimicry protocol (STANDARD), whose FIDs compare with published ones."""
    return (n_samples, n_real, real_split) == tuple(STANDARD.values())


def announce_protocol(*, n_samples: int, n_real: int | None, real_split: str, kid_subsets: int,
                      kid_subset_size: int) -> None:
    real = "the whole split" if n_real is None else f"{n_real}"
    print("Evaluating", flush=True)
    print(f"  generated images  {n_samples} (the EMA generator, seed-fixed latents)")
    print(f"  real images       {real} of split {real_split}")
    print(f"  KID subsets       {kid_subsets} x {kid_subset_size} (fewer images per subset if a set is smaller)")
    if not standard(n_samples, n_real, real_split):
        print("  Not the standard protocol (50,000 generated vs 50,000 real images of the train split, whose FIDs "
              "compare with published ones): n=50000 measures it; FIDs of fewer images are biased upwards.")
    print("  estimate          timing the networks on a few images here ...", flush=True)


def announce(model, extractor, *, n_samples: int, n_real: int | None, real_split: str, cached: bool,
             kid_subsets: int, kid_subset_size: int, device: torch.device, batch_size: int) -> None:
    """What is about to be measured and about how long it takes here, before any of it is spent:
    Inception runs at a few images a second on a CPU, where 50,000 + 50,000 images take days."""
    name = getattr(extractor, "name", type(extractor).__name__)
    print(f"  real features     {'cached' if cached else 'computed now'}")
    print(f"  feature network   {name}", flush=True)
    from celebgan.metrics.features import generated_per_second
    from celebgan.metrics.scores import scores_seconds
    from celebgan.io import format_duration

    rate = generated_per_second(model, extractor, batch_size=min(batch_size, n_samples))
    images = n_samples + (0 if cached or n_real is None else n_real)
    seconds = images / rate + scores_seconds(getattr(extractor, "num_features", 2048), device=device,
                                             kid_subset_size=min(kid_subset_size, n_samples), kid_subsets=kid_subsets)
    whole = " and the whole real split" if n_real is None and not cached else ""
    print(f"  estimate          about {format_duration(seconds)}: {images} images{whole} through the networks at "
          f"{rate:.1f} images/s measured here, then the scores (an estimate; n=N sets the size)", flush=True)


def print_obedience(scores: dict, n: int) -> None:
    """Per attribute: the shares of faces asked consistently with / without it that the classifier agrees
    with, their mean (balanced accuracy), the same mean for independent requests, and the classifier's
    own on real faces (the ceiling)."""
    def num(value):
        return f"{value:.3f}" if value is not None else "  -  "
    per, ceiling = scores["per_attribute"], scores["ceiling"]["per_attribute"]
    independent = scores["independent"]["per_attribute"]
    width = max(map(len, per))
    print(f"Obedience ({n} faces per attribute asked with it and {n} without; balanced accuracy, 0.5 = ignored)")
    print(f"  consistent: {scores['asked_from']} that have it / lack it; independent: it set in rows drawn each "
          "from its frequency")
    print(f"  {'attribute':<{width}}  with   without  balanced  independent  ceiling (the classifier on real faces)")
    for name, s in per.items():
        print(f"  {name:<{width}}  {num(s['with'])}  {num(s['without'])}    {num(s['balanced'])}     "
              f"{num(independent[name]['balanced'])}        {num(ceiling[name]['balanced'])}")
    print(f"  {'mean':<{width}}                  {num(scores['mean'])}     {num(scores['independent']['mean'])}"
          f"        {num(scores['ceiling']['mean'])}")


def write_results(results: dict, out: Path) -> Path:
    with atomic_write(out) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    return out


@command("evaluate")
def main(cfg: DictConfig) -> None:
    from celebgan.devices import use_threads

    use_threads(cfg.threads)
    evaluate(cfg)


if __name__ == "__main__":
    main()
