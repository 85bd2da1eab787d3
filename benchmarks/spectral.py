"""Why spectral normalisation lagged, and what fixes it: short runs of the spectral preset's arms
against vanilla on the synthetic faces, with what D and G look like at the end.

Each arm trains the demo's networks (32px, half widths, batch 32) from the same seed for a reduced
budget (--epochs, 8: 80,000 images), then is measured:

- FID and KID of --n-eval EMA-generator images against as many held-out faces (split=test);
- D(x) and D(G(z)): the last epoch's means (before D's update), as the run logged them;
- D's logits on 256 held-out faces and 256 EMA-generator images (mean, std): how far apart D puts them;
- D's per-layer gain: the mean |output| / |input| of each conv on the held-out faces, after its
  spectral normalisation (1 at most in the operator norm's direction), and each conv's raw largest
  singular value (the trained weight before SN divides it by that value);
- G's gradient per image: the norm of d(G loss)/d(image) on G's images, what G learns from;
- G's per-pixel std over its images (0: one image).

Each finished run is a JSON record in benchmarks/spectral_runs/ (keyed by the arm's overrides, seed
and budget); the table is rebuilt from them with --cached-only. The grid of each run is written to
outputs/spectral/ARM_seedS.png.

    python benchmarks/spectral.py                       # every arm, seed 0 (CPU: about 15 min an arm)
    python benchmarks/spectral.py --arms spectral sn_hinge --seeds 3
    python benchmarks/spectral.py --cached-only
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from celebgan.conf import CONFIG_DIR
from celebgan.data.modules import SyntheticDataModule
from celebgan.gan.images import save_png, to_grid
from celebgan.metrics.feature_cache import RealFeatureCache
from celebgan.metrics.features import InceptionFeatures
from celebgan.metrics.registry import calc_metrics
from celebgan.run.checkpoint import load_gan
from celebgan.train import train

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from quality import provenance, save_record  # noqa: E402  (one provenance and record writer)
from results import write_section  # noqa: E402

SECTION = "## Spectral normalisation: why it lagged (benchmarks/spectral.py)"
RUNS_DIR = ROOT / "benchmarks" / "spectral_runs"
SNGAN_BETAS = ["model.g_optimizer.betas=[0.0,0.9]", "model.d_optimizer.betas=[0.0,0.9]"]
# name -> (what it tests, Hydra overrides on the demo's config)
ARMS = {
    "vanilla": ("the DCGAN paper: BatchNorm in D, BCE, 2e-4", ["model=vanilla"]),
    "spectral": ("SN on every D conv, no BatchNorm, BCE, 2e-4 (the preset as it was)", ["model=spectral"]),
    "sn_hinge": ("+ hinge loss (SN-GAN's objective)", ["model=spectral", "model/loss=hinge"]),
    "sn_lr1e-3": ("SN, BCE, 1e-3 for G and D (high_lr's rate)",
                  ["model=spectral", "model.g_optimizer.lr=1e-3", "model.d_optimizer.lr=1e-3"]),
    "sn_hinge_sagan": ("+ hinge, G 1e-4 / D 4e-4, betas (0, 0.9)",
                       ["model=spectral", "model/loss=hinge", "model.g_optimizer.lr=1e-4",
                        "model.d_optimizer.lr=4e-4", *SNGAN_BETAS]),
    "sn_hinge_wide": ("+ hinge, D twice as wide (ndf 64)",
                      ["model=spectral", "model/loss=hinge", "model.discriminator.ndf=64"]),
    "sn_hinge_sngan_d": ("+ hinge, SN-GAN's D layout: a 3x3 conv after each stride-2 one, slope 0.1",
                         ["model=spectral", "model/loss=hinge", "model.discriminator.stride1_convs=true",
                          "model.discriminator.slope=0.1"]),
    "vanilla_wide": ("vanilla with D twice as wide (ndf 64): sn_hinge_wide's control",
                     ["model=vanilla", "model.discriminator.ndf=64"]),
    "sn_gain2": ("SN with each conv's Lipschitz bound 2 (W / sigma * 2), BCE",
                 ["model=spectral", "model.discriminator.sn_gain=2.0"]),
    "sn_hinge_gain2": ("+ hinge, each conv's Lipschitz bound 2", ["model=spectral", "model/loss=hinge",
                                                                   "model.discriminator.sn_gain=2.0"]),
    "sn_gain1.5": ("SN with each conv's Lipschitz bound 1.5, BCE", ["model=spectral", "model.discriminator.sn_gain=1.5"]),
    "sn_sngan_d": ("SN-GAN's D layout with BCE: a 3x3 conv after each stride-2 one, slope 0.1",
                   ["model=spectral", "model.discriminator.stride1_convs=true", "model.discriminator.slope=0.1"]),
}


def compose_arm(arm: str, seed: int, epochs: int, out_dir: Path):
    overrides = ["experiment=demo", *ARMS[arm][1], f"seed={seed}", f"trainer.max_epochs={epochs}",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                 "callbacks.sample_grid.every_n_epochs=1000", "threads=1"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    return cfg


def record_path(runs_dir: Path, arm: str, seed: int, epochs: int, n_eval: int, features: str) -> Path:
    key = json.dumps({"overrides": ARMS[arm][1], "seed": seed, "epochs": epochs, "n_eval": n_eval,
                      "features": features}, sort_keys=True)
    return runs_dir / f"{arm}_seed{seed}_{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"


def diagnose(gan, real: torch.Tensor) -> dict:
    """D's logits and per-layer gains, the raw singular values, G's gradient per image and pixel std."""
    D = gan.discriminator
    with torch.no_grad():
        z = torch.randn(len(real), gan.generator.nz, 1, 1, generator=torch.Generator().manual_seed(1))
        fake = gan.sample(z)
    out: dict = {}
    for tag, x in (("real", real), ("fake", fake)):
        h, gains = x.contiguous(), []
        with torch.no_grad():
            for layer in D.main:
                after = layer(h)
                if isinstance(layer, torch.nn.Conv2d):
                    gains.append(float(after.flatten(1).norm(dim=1).mean() / h.flatten(1).norm(dim=1).mean()))
                h = after
        out[f"logit_{tag}"] = (float(h.mean()), float(h.std()))
        out[f"gains_{tag}"] = gains
    out["raw_sigma"] = [float(torch.linalg.matrix_norm(
        (m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight).flatten(1), 2))
        for m in D.main if isinstance(m, torch.nn.Conv2d)]
    images = fake.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gan.g_loss_fn(D(images)), images)
    out["g_grad_per_image"] = float(grad.flatten(1).norm(dim=1).mean() * len(images))  # the loss is a mean
    out["g_pixel_std"] = float(fake.std(0).mean())
    return out


def run_arm(arm: str, seed: int, args, extractor, real: torch.Tensor, tmp: Path) -> dict:
    cfg = compose_arm(arm, seed, args.epochs, tmp / f"{arm}_seed{seed}")
    start = time.monotonic()
    metrics = train(cfg)
    minutes = (time.monotonic() - start) / 60
    gan, _ = load_gan(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    data = SyntheticDataModule(num_images=256, img_size=32, batch_size=64)
    real = data.eval_dataset("test", 256).images.float() / 127.5 - 1
    result = {"arm": arm, "seed": seed, "epochs": args.epochs, "minutes": minutes, **diagnose(gan, real),
              "D_x": metrics.get("train_epoch/D_x"), "D_G_z": metrics.get("train_epoch/D_G_z1")}
    scores = calc_metrics(["fid", "kid"], real=real, gan=gan, extractor=extractor, n_samples=args.n_eval, batch_size=50,
                          kid_subset_size=1000, kid_subsets=100)
    grids = ROOT / "outputs" / "spectral"
    grids.mkdir(parents=True, exist_ok=True)
    save_png(to_grid(gan.sample(gan.fixed_z).cpu(), 8), grids / f"{arm}_seed{seed}.png")
    shutil.rmtree(cfg.paths.output_dir, ignore_errors=True)
    return result | {"fid": scores["fid"], "kid": scores["kid"]}


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    m = sum(values) / len(values)
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{m:.1f} +- {sd:.1f}"


def table(rows: dict[str, list[dict]], args) -> str:
    lines = ["| arm | what | seeds | FID | KID x 1000 | D(x) | D(G(z)) | logit real / fake | D gains (conv 1..4) "
             "| raw sigma (conv 1..4) | G grad / image | G pixel std |",
             "|---|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|"]
    for arm, results in rows.items():
        first = results[0]
        avg = lambda key: sum(r[key] for r in results) / len(results)  # noqa: E731
        gains = " / ".join(f"{g:.2f}" for g in first["gains_real"])
        sigma = " / ".join(f"{s:.2f}" for s in first["raw_sigma"])
        lines.append(f"| {arm} | {ARMS[arm][0]} | {len(results)} | {mean_sd([r['fid'] for r in results])} | "
                     f"{mean_sd([1000 * r['kid'] for r in results])} | {avg('D_x'):.2f} | {avg('D_G_z'):.2f} | "
                     f"{first['logit_real'][0]:+.2f} / {first['logit_fake'][0]:+.2f} | {gains} | {sigma} | "
                     f"{first['g_grad_per_image']:.2e} | {first['g_pixel_std']:.3f} |")
    made = sorted({(r["date"], r["commit"], r["host"], r.get("cpu_capability")) for rs in rows.values() for r in rs})
    where = "; ".join(f"{d} at commit {c} on {h} (CPU capability {cap})" for d, c, h, cap in made)
    return "\n".join([
        SECTION, "",
        f"Command: `python benchmarks/spectral.py {' '.join(sys.argv[1:])}`".rstrip() + f"; runs: {where}.", "",
        f"The demo's networks (32px, ngf = ndf = 32, batch 32) for {args.epochs} epochs of 10,000 synthetic faces "
        f"({args.epochs * 10}k images), then FID/KID of {args.n_eval} EMA-generator images against {args.n_eval} "
        "held-out faces (Inception pool3; FIDs of so few images sit high: compare rows). D(x), D(G(z)): the last "
        "epoch's means. Logits, gains (mean |conv(h)| / |h| on held-out faces), raw sigma (each conv's largest "
        "singular value before SN divides by it), G's gradient per image and G's pixel std: seed 0's run at its end. "
        "Records: benchmarks/spectral_runs/.", "", *lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-eval", type=int, default=500)
    parser.add_argument("--cached-only", action="store_true", help="train nothing: the table from the records")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
    provenance()
    extractor = InceptionFeatures()
    cache = Path(os.environ.get("CELEBGAN_CACHE", ROOT / "outputs" / "cache"))
    real = None  # the held-out features, read once something is to be measured
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="celebgan-spectral-") as tmp:
        for arm in args.arms:
            for seed in range(args.seeds):
                path = record_path(args.runs_dir, arm, seed, args.epochs, args.n_eval, extractor.name)
                if path.is_file():
                    result = json.loads(path.read_text())
                elif args.cached_only:
                    continue
                else:
                    if real is None:
                        data = SyntheticDataModule(num_images=args.n_eval, img_size=32, batch_size=64)
                        real = RealFeatureCache(cache).get(data, "test", args.n_eval, extractor, batch_size=50,
                                                           device="cpu")
                    result = run_arm(arm, seed, args, extractor, real, Path(tmp))
                    save_record(path, result)
                    result = json.loads(path.read_text())
                print(f"{arm} seed {seed}: FID {result['fid']:.1f}, D(x) {result['D_x']:.2f}, "
                      f"D(G(z)) {result['D_G_z']:.2f}", flush=True)
                rows.setdefault(arm, []).append(result)
    section = table(rows, args)
    print(section)
    write_section(args.results, section)
    print(f"Wrote {args.results} ({datetime.date.today()}, {platform.node()})")


if __name__ == "__main__":
    main()
