"""Training dynamics of the model presets on the synthetic faces: who wins, when, and what G makes.

For each preset, a short 32px run from the same seed, with D(x) and D(G(z)) read every step, and at
the end the generator's fixed-latent batch in train-mode and eval-mode BatchNorm. A table per run:

- spike: the largest G loss of the first 100 steps and the step it happened at (CelebA's DCGAN
  shows an early spike, then recovers);
- D(x), D(G(z)) late: means over the last half of the run; "D wins" is the fraction of those steps
  with D(x) > 0.95 and D(G(z)) < 0.05, i.e. D separates every image and G learns from saturated logits;
- G std / spread: the per-pixel std of G's images (a collapse to one grey image has std near 0) and
  the mean distance between two samples relative to that between two real images (1 = as varied);
- eval gap: mean |G_eval(z) - G_train(z)|, the change that eval-mode BatchNorm makes to samples;
- flat px / edge: fraction of pixels whose 3x3 neighbourhood is perfectly flat, and the mean
  absolute Laplacian, of real images and of G's images: how far apart their low-level statistics are.

    python benchmarks/diagnose.py                     # vanilla, label_smoothing, spectral, hinge, ...
    python benchmarks/diagnose.py --models vanilla spectral --steps 300
"""
import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from celebgan.conf import CONFIG_DIR
from celebgan.gan.images import save_png, to_grid
from celebgan.gan.networks import Discriminator, Generator
from celebgan.data.synthetic import render_faces

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results import write_section  # noqa: E402  (RESULTS.md's one writer)

SECTION = "## Training dynamics (benchmarks/diagnose.py)"
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


class Curves(L.Callback):
    """D(x), D(G(z)) (before D's update) and the G loss of every training step."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        m = trainer.callback_metrics
        self.rows.append({k: float(m[f"train/{k}"]) for k in ("D_x", "D_G_z1", "g_loss")
                          if f"train/{k}" in m})


def low_level_stats(images: torch.Tensor) -> tuple[float, float]:
    """(fraction of flat 3x3 neighbourhoods, mean |Laplacian|) of (B, 3, S, S) images in [-1, 1]."""
    gray = images.mean(1, keepdim=True)
    local_var = F.avg_pool2d(gray.square(), 3, 1) - F.avg_pool2d(gray, 3, 1).square()
    return float((local_var < 1e-6).float().mean()), float(F.conv2d(gray, LAPLACIAN).abs().mean())


def mean_pair_distance(images: torch.Tensor) -> float:
    flat = images.flatten(1)
    return float(torch.pdist(flat).mean())


def run(model: str, overrides: list[str], steps: int, batch_size: int, seed: int, grid: Path | None = None) -> dict:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"model={model}", "data=synthetic", "data.img_size=32", f"data.batch_size={batch_size}",
            f"data.num_images={max(4 * batch_size, 8000)}", *overrides])
    L.seed_everything(seed)
    datamodule = hydra.utils.instantiate(cfg.data)
    gan = hydra.utils.instantiate(cfg.model)
    curves = Curves()
    trainer = L.Trainer(accelerator="cpu", max_steps=gan.optimizer_steps(steps, gan.n_dis), logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[curves])
    trainer.fit(gan, datamodule=datamodule)
    rows = curves.rows
    early = [(r.get("g_loss", float("nan")), i) for i, r in enumerate(rows[:100])]
    late = rows[len(rows) // 2:]
    d_x = sum(r["D_x"] for r in late) / len(late)
    d_gz = sum(r["D_G_z1"] for r in late) / len(late)
    wins = sum(r["D_x"] > 0.95 and r["D_G_z1"] < 0.05 for r in late) / len(late)
    real = datamodule.eval_dataset("valid", 256).images.float() / 127.5 - 1
    with torch.no_grad():
        z = torch.randn(256, gan.generator.nz, 1, 1, generator=torch.Generator().manual_seed(1))
        gan.generator.train()
        g_train = gan.generator(z)
        gan.generator.eval()
        g_eval = gan.generator(z)
    if grid is not None:  # what G makes, as the run's own grids show it (EMA G, eval mode)
        save_png(to_grid(gan.sample(gan.fixed_z[:64]).cpu(), 8), grid)
    real_flat, real_edge = low_level_stats(real)
    fake_flat, fake_edge = low_level_stats(g_eval)
    return {
        "spike": max(early), "d_x": d_x, "d_gz": d_gz, "wins": wins,
        "g_std": float(g_eval.std(0).mean()),
        "spread": mean_pair_distance(g_eval) / mean_pair_distance(real),
        "eval_gap": float((g_eval - g_train).abs().mean()),
        "real_flat": real_flat, "fake_flat": fake_flat, "real_edge": real_edge, "fake_edge": fake_edge,
    }


def init_probe(batch_size: int = 64, seed: int = 0) -> list[str]:
    """D at initialisation on real synthetic faces and an untrained G's images: how far apart its
    logits put them, and how strong a gradient G receives. Spectral norm divides each weight by
    its largest singular value, so the N(0, 0.02) init's scale cancels: the forward pass is that of
    any init, and the rows differ by BatchNorm alone."""
    torch.manual_seed(seed)
    real = render_faces(batch_size, 32)[0].float() / 127.5 - 1
    fake = Generator(img_size=32)(torch.randn(batch_size, 100, 1, 1)).detach()
    lines = ["| D at init | logit std (real) | mean logit gap real - fake | grad to G per image |",
             "|---|---:|---:|---:|"]
    for name, kwargs in [("vanilla: BatchNorm", {}), ("spectral: SN, no BatchNorm", {"spectral_norm": True, "batch_norm": False}),
                         ("no SN, no BatchNorm", {"batch_norm": False})]:
        torch.manual_seed(seed + 1)
        d = Discriminator(img_size=32, **kwargs)
        f = fake.clone().requires_grad_(True)
        real_logits, fake_logits = d(real), d(f)
        (grad,) = torch.autograd.grad(F.softplus(-fake_logits).mean(), f)
        lines.append(f"| {name} | {real_logits.std():.4f} | {(real_logits.mean() - fake_logits.mean()).abs():.4f} | "
                     f"{grad.flatten(1).norm(dim=1).mean():.2e} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vanilla", "label_smoothing", "spectral", "hinge", "ttur",
                                                         "regularized"])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--override", action="append", default=[], help="a Hydra override for every run")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--grids", type=Path, help="also save each run's final sample grid as GRIDS/<model>.png")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    lines = [
        "| model | G-loss spike (step) | D(x) late | D(G(z)) late | D wins | G std | spread | eval gap "
        "| flat px real / G | edge real / G |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in args.models:
        name, *extra = model.split(":")  # "spectral:model.g_optimizer.lr=1e-4" adds overrides
        grid = args.grids / f"{model.replace('/', '_')}.png" if args.grids else None
        r = run(name, [*args.override, *extra], args.steps, args.batch_size, args.seed, grid)
        lines.append(
            f"| {model} | {r['spike'][0]:.1f} ({r['spike'][1]}) | {r['d_x']:.3f} | {r['d_gz']:.3f} | "
            f"{r['wins']:.0%} | {r['g_std']:.3f} | {r['spread']:.2f} | {r['eval_gap']:.3f} | "
            f"{r['real_flat']:.3f} / {r['fake_flat']:.3f} | {r['real_edge']:.3f} / {r['fake_edge']:.3f} |")
        print(lines[-1], flush=True)
    probe = init_probe(args.batch_size, args.seed)
    print("\n".join(probe))
    section = "\n".join([
        SECTION, "",
        f"{datetime.date.today()}, {platform.node() or 'unknown host'} ({os.cpu_count()} CPUs), "
        f"torch {torch.__version__}. Command: `python benchmarks/diagnose.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        f"32px synthetic faces, batch {args.batch_size}, {args.steps} training steps, seed {args.seed}. "
        "Columns: see the script's docstring.", "", *lines, "", *probe, "",
    ])
    print(section)
    if not args.no_write:
        write_section(args.results, section)


if __name__ == "__main__":
    main()
