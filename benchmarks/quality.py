"""Sample quality of the DCGAN variants on the synthetic faces, with the standard Inception FID/KID.

Trains vanilla, label_smoothing, spectral and regularized at 32px for the same number of images,
then measures each EMA generator against held-out synthetic images (split=test), beside floor and
ceiling rows: real-vs-real (the valid split), blurred and colour-shifted real images, and an
untrained generator. Writes its table to benchmarks/RESULTS.md (its own section).

    python benchmarks/quality.py            # the full run: about 30 minutes on a 2-core CPU
    python benchmarks/quality.py --quick    # a smoke run of the plumbing (minutes; not a result)
"""
import argparse
import datetime
import logging
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import hydra
import torch
import torchvision.transforms.functional as TF
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from celebgan.data import SyntheticDataModule
from celebgan.checkpoint import load_gan
from celebgan.feature_cache import RealFeatureCache
from celebgan.features import InceptionFeatures, generator_features
from celebgan.io import atomic_write
from celebgan.metrics import FeatureDistances
from celebgan.train import train

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["vanilla", "label_smoothing", "spectral", "regularized"]
SECTION = "## Sample quality (benchmarks/quality.py)"


def run_config(variant: str, args, out_dir: Path):
    steps = args.num_images // args.batch_size * args.epochs
    overrides = [
        f"model={variant}", "data=synthetic", "data.img_size=32", f"data.num_images={args.num_images}",
        f"data.batch_size={args.batch_size}", f"trainer.max_epochs={args.epochs}", "metrics=none",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "callbacks.sample_grid.every_n_epochs=1000",
    ]
    if variant == "regularized":  # the preset anneals over 5000 steps; here over the first half of the run
        overrides.append(f"model.instance_noise_steps={max(1, steps // 2)}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir / variant)
    return cfg


def images_of(dataset) -> torch.Tensor:
    return dataset.images.float() / 127.5 - 1  # (N, 3, S, S) uint8 -> [-1, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budget: checks the plumbing, measures nothing")
    parser.add_argument("--num-images", type=int, default=8000, help="synthetic training images")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-eval", type=int, default=500, help="generated and real images per FID/KID")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--write", action="store_true", help="with --quick: write RESULTS.md anyway")
    args = parser.parse_args()
    if args.quick:
        args.num_images, args.epochs, args.n_eval = 256, 1, 24
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    start = time.monotonic()

    extractor = InceptionFeatures()
    n = args.n_eval
    kid_subset = min(1000, n)
    data = SyntheticDataModule(num_images=args.num_images, img_size=32, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory(prefix="celebgan-quality-") as tmp:
        tmp = Path(tmp)
        real = RealFeatureCache(tmp / "cache").get(data, "test", n, extractor, batch_size=50)
        distances = FeatureDistances(real.shape[1], kid_subset_size=kid_subset, kid_subsets=100)
        distances.add_real(real)

        def score(features: torch.Tensor) -> dict:
            distances.add_fake(features)
            result = distances.compute()
            distances.reset()
            return result

        rows = []
        valid = images_of(data.eval_dataset("valid", n))
        rows.append(("real vs real (valid split)", "-", score(extractor(valid))))
        rows.append(("real, Gaussian blur sigma 1", "-", score(extractor(TF.gaussian_blur(valid, 5, 1.0)))))
        shift = torch.tensor([0.25, 0.0, -0.25])[:, None, None]  # warmer colours, an eighth of the range
        rows.append(("real, colour-shifted", "-", score(extractor((valid + shift).clamp(-1, 1)))))
        torch.manual_seed(0)
        untrained = hydra.utils.instantiate(run_config("vanilla", args, tmp).model)
        rows.append(("untrained generator", "0", score(generator_features(untrained, extractor, n, batch_size=50))))
        for variant in VARIANTS:
            cfg = run_config(variant, args, tmp)
            t0 = time.monotonic()
            train(cfg)
            train_s = time.monotonic() - t0
            gan, _ = load_gan(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
            rows.append((variant, f"{train_s / 60:.1f}",
                         score(generator_features(gan, extractor, n, batch_size=50))))
            print(f"{variant}: trained in {train_s:.0f} s, FID {rows[-1][2]['fid']:.2f}", flush=True)

    trained = sorted((r for r in rows if r[0] in VARIANTS), key=lambda r: r[2]["fid"])
    best, second = trained[0], trained[1]
    lines = [
        SECTION,
        "",
        f"{datetime.date.today()}, {platform.node() or 'unknown host'} ({os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"{'QUICK SMOKE RUN, NOT A RESULT, ' if args.quick else ''}{(time.monotonic() - start) / 60:.0f} min in all.",
        f"Command: `python benchmarks/quality.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        f"Each variant trained on {args.num_images} synthetic 32px faces for {args.epochs} epochs "
        f"(batch {args.batch_size}, {args.num_images // args.batch_size * args.epochs} steps); "
        f"FID and KID ({kid_subset}-sample subsets) of {n} EMA-generator images against {n} held-out "
        f"real images (split=test), features of {extractor.name}. FIDs of {n} samples are biased "
        "upwards: compare rows, not with published numbers."
        + (" With subsets as large as the sample, KID's spread over subsets is 0." if kid_subset >= n else ""),
        "",
        "| model | train (min) | FID | KID x 1000 |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {minutes} | {r['fid']:.2f} | {1000 * r['kid']:.2f} +- {1000 * r['kid_std']:.2f} |"
          for name, minutes, r in rows],
        "",
        f"Best variant: **{best[0]}**, FID {best[2]['fid']:.2f} against {second[2]['fid']:.2f} for "
        f"{second[0]}, the runner-up ({second[2]['fid'] / best[2]['fid']:.2f}x)"
        + ("." if "vanilla" in (best[0], second[0]) else
           f", and {next(r[2]['fid'] for r in rows if r[0] == 'vanilla'):.2f} for vanilla."),
        "",
    ]
    table = "\n".join(lines)
    print(table)
    if args.quick and not args.write:
        print("(--quick: RESULTS.md left alone; add --write to write it anyway)")
        return
    write_section(args.results, table)
    print(f"Wrote {args.results}")


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section of RESULTS.md (up to the next '## '), or append it."""
    text = path.read_text() if path.is_file() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    with atomic_write(path) as tmp:
        tmp.write_text(text)


if __name__ == "__main__":
    main()
