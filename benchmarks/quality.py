"""Sample quality of the model presets on the synthetic faces: standard Inception FID/KID, 3 seeds.

Every preset of conf/model/ (or those named with --variants) trains from each seed for the same
image budget, and each EMA generator's images are measured against held-out synthetic faces
(split=test). Anchor rows bound the scale: real vs real (the valid split against the test split)
and an untrained generator; --full adds blurred and colour-shifted real images. Each variant's row
is the mean and the spread (standard deviation over seeds) of FID and KID. The table goes to
benchmarks/RESULTS.md (its own section) with the date, the machine and the command.

    python benchmarks/quality.py                                   # the headline presets, 3 seeds (CPU: ~1 hour)
    python benchmarks/quality.py --all                             # every preset, 3 seeds (CPU: ~3 hours)
    python benchmarks/quality.py --variants vanilla high_lr        # named presets
    python benchmarks/quality.py --all --cached-only               # the table from the runs finished so far
    python benchmarks/quality.py --ckpt outputs/runs/RUN/checkpoints/last.ckpt   # add an existing run
    python benchmarks/quality.py --full                            # a GPU-sized budget, 64px
    python benchmarks/quality.py --quick                           # plumbing only, not a result

The default budget is the demo's (experiment=demo: 32px, its widths, batch and epochs), so the
recommended preset's row is what `make demo` trains, and every variant gets the same images.
Inception runs at about 3-6 images/s on a 2-core CPU: each row costs n_eval / rate seconds on top
of training, which is why the CPU default measures 1,000 images and a GPU run should use --full.

Each finished run's scores (and the anchors') are kept as a small JSON record in
benchmarks/quality_runs/, committed with the code, under a key of its composed config, the number of
images measured and the feature network. An interrupted benchmark picks up where it stopped, a rerun
with more variants trains only the new ones, and the table can be rebuilt on any machine from the
records alone (--cached-only). Every row of the table comes from records (or from a measurement of this
invocation): a preset without records is listed as not run yet. The section is generated whole, its
paragraph on the machines too, from the records' provenance (date, commit, host, CPUs, GPU).
"""
import argparse
import datetime
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hydra
import torch
import torchvision.transforms.functional as TF
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from celebgan.conf import CONFIG_DIR
from celebgan.run.checkpoint import load_gan
from celebgan.data.modules import SyntheticDataModule
from celebgan.metrics.feature_cache import RealFeatureCache
from celebgan.metrics.features import InceptionFeatures
from celebgan.metrics.registry import calc_metrics, kid_subset
from celebgan.gan.images import save_png, to_grid
from celebgan.io import atomic_write
from celebgan.data.synthetic import RENDERER_VERSION
from celebgan.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section  # noqa: E402  (RESULTS.md's one writer)

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Sample quality (benchmarks/quality.py)"
# The attribute-conditional presets are measured by benchmarks/conditional.py (FID beside obedience).
CONDITIONAL = ["acgan", "projection"]
ALL_VARIANTS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml") if p.stem not in CONDITIONAL)
# The default set, sized for about an hour on a 2-core CPU: the baseline, the recommended preset
# and the two regularisers that kept D from winning in the training-dynamics table.
HEADLINE = ["vanilla", "high_lr", "r1", "diffaugment"]
RUNS_DIR = ROOT / "benchmarks" / "quality_runs"


def compose_run(variant: str, seed: int, args, out_dir: Path):
    """The demo's config with another model preset, seed and (optionally) budget."""
    overrides = [
        "experiment=demo", f"model={variant}", f"seed={seed}", f"data.img_size={args.img_size}",
        "trainer.accelerator=auto", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "callbacks.sample_grid.every_n_epochs=1000", "~logger",
    ]
    overrides += [f"data.num_images={args.num_images}"] if args.num_images else []
    overrides += [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
    overrides += [f"data.batch_size={args.batch_size}"] if args.batch_size else []
    overrides += args.override
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir / f"{variant}_seed{seed}")
    return cfg


def run_key(variant: str, cfg, args, n_eval: int, extractor_name: str) -> str:
    """What a run's score depends on: the preset's name, seed, budget, overrides, resolved precision,
    the renderer and the metric. Not the composed model config itself, so that a key added to the
    presets with a default that changes nothing keeps the records valid; a change to what a preset
    trains must clear its records (git rm benchmarks/quality_runs/PRESET_*)."""
    parts = {"variant": variant, "seed": int(cfg.seed), "img_size": int(cfg.data.img_size),
             "num_images": int(cfg.data.num_images), "epochs": int(cfg.trainer.max_epochs),
             "batch_size": int(cfg.data.batch_size), "overrides": sorted(args.override),
             "precision": str(OmegaConf.select(cfg, "trainer.precision")), "renderer": RENDERER_VERSION}
    text = json.dumps(parts, sort_keys=True) + f"n_eval={n_eval} features={extractor_name}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def measure(real: torch.Tensor, extractor, n: int, *, fake: torch.Tensor | None = None, gan=None) -> dict:
    """A row's FID and KID (1,000-image subsets, 100 of them): of `fake` features, or of n images of
    `gan` (its latents of seed 0 in batches of 50), against the held-out `real` features."""
    return calc_metrics(["fid", "kid"], real=real, fake=fake, gan=gan, extractor=extractor,
                        n_samples=None if gan is None else n, batch_size=50, kid_subset_size=1000, kid_subsets=100)


def images_of(dataset) -> torch.Tensor:
    return dataset.images.float() / 127.5 - 1  # (N, 3, S, S) uint8 -> [-1, 1]


@functools.cache
def provenance() -> dict:
    """Where and with which code a record was made: read once, at the start, so that a commit made while
    the benchmark runs is not credited with its runs."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"date": str(datetime.date.today()), "commit": commit, "host": platform.node() or "unknown",
            "cpus": os.cpu_count(), "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def cpu_model() -> str | None:
    """The processor's name as the OS gives it (/proc/cpuinfo's "model name", else platform's): VMs
    of one host name can sit on different processors, and their speeds differ several times."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or None


def save_record(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp_file:
        tmp_file.write_text(json.dumps(result | provenance(), indent=1) + "\n")


def summarise(name: str, minutes: str, results: list[dict]) -> dict:
    """A table row from one result per seed (or one measurement). A result read from a record carries
    its provenance (date, commit, host, ...); one measured by this invocation gets this machine's."""
    def stat(values):
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)
    return {"name": name, "minutes": minutes, "fid": stat([r["fid"] for r in results]),
            "kid": stat([1000 * r["kid"] for r in results]),
            "made": [made_where(r) | {"seed": r.get("seed")} for r in results]}


def made_where(result: dict) -> dict:
    """A record's provenance as it was saved (older records lack cpu_capability: None), or this
    machine's for a result measured now."""
    return {k: result.get(k) for k in PROVENANCE} if "date" in result else \
        {k: provenance()[k] for k in PROVENANCE}


def variant_row(variant: str, results: list[dict], minutes: list[float], num_seeds: int) -> dict | None:
    """The row of a preset, from its records; None without any (the preset is listed as not run yet)."""
    if not results:
        return None
    seeds = "" if len(results) == num_seeds else f" ({len(results)} of {num_seeds} seeds)"
    return summarise(variant + seeds, f"{statistics.mean(minutes):.1f}", results) | {"variant": True}


PROVENANCE = ("host", "cpus", "cpu_model", "cpu_capability", "gpu", "commit", "date")


def machines(rows: list[dict]) -> str:
    """Which rows were made where: the rows' results grouped by their records' host, CPUs, processor,
    CPU capability, GPU, commit and date (older records name no processor, the oldest no capability)."""
    groups: dict[tuple, list[str]] = {}
    for row in rows:
        where: dict[tuple, list] = {}
        for made in row["made"]:
            where.setdefault(tuple(made.get(k) for k in PROVENANCE), []).append(made["seed"])
        for key, seeds in where.items():
            part = "" if len(where) == 1 or None in seeds else \
                f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(seeds)))})"
            groups.setdefault(key, []).append(row["name"] + part)
    lines = []
    for (host, cpus, model, capability, gpu, commit, date), names in groups.items():
        lines.append(f"{', '.join(names)}: {date} at commit {commit} on {host or 'an unnamed host'} "
                     f"({cpus} CPUs, {f'{model}, ' if model else ''}"
                     f"{f'CPU capability {capability}' if capability else 'CPU capability not recorded'}, "
                     f"{gpu or 'no GPU'}).")
    return ("Machines (from the records): " + " ".join(lines) + ' "train (min)" is the wall time on the '
            "machine that trained the run, under whatever else ran there: it differs by machine and load, "
            "not only by preset.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=HEADLINE, help=f"presets (default: {HEADLINE})")
    parser.add_argument("--all", action="store_true", help=f"every unconditional preset of conf/model/: {ALL_VARIANTS}")
    parser.add_argument("--cached-only", action="store_true",
                        help="train nothing: the table from the runs already finished (a partial ranking)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only-seeds", type=int, nargs="+",
                        help="of the seeds, train only these (two processes side by side split one preset's seeds)")
    parser.add_argument("--n-eval", type=int, default=1000, help="generated and held-out real images per FID/KID")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--num-images", type=int, help="synthetic training images (default: the demo's)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the demo's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the demo's)")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override for every run")
    parser.add_argument("--ckpt", nargs="*", default=[], help="also measure these checkpoints (e.g. the demo's)")
    parser.add_argument("--full", action="store_true",
                        help="GPU budget: 64px, 50,000 images x 20 epochs, 10,000 vs 10,000 images, more anchors")
    parser.add_argument("--quick", action="store_true", help="tiny budget: checks the plumbing, measures nothing")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--write", action="store_true", help="with --quick: write RESULTS.md anyway")
    parser.add_argument("--grids-dir", type=Path, default=ROOT / "outputs" / "quality_grids",
                        help="where each trained run's last grid (EMA G, the fixed latents) is saved, named as its record")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR,
                        help="where the per-run records are kept (another folder for probes with --override)")
    args = parser.parse_args()
    if args.all:  # the headline presets first, so that a partial run has the rows that matter most
        args.variants = [*HEADLINE, *(v for v in ALL_VARIANTS if v not in HEADLINE)]
    unknown = sorted(set(args.variants) - set(ALL_VARIANTS))
    if unknown:
        parser.error(f"unknown presets {unknown}: choose from conf/model/ {ALL_VARIANTS}")
    if args.full:
        args.img_size, args.n_eval = 64, 10_000
        args.num_images, args.epochs = args.num_images or 50_000, args.epochs or 20
    if args.quick:
        args.num_images, args.epochs, args.n_eval, args.seeds = 256, 1, 24, min(args.seeds, 2)
        args.override = [*args.override, "model.generator.ngf=8", "model.discriminator.ndf=8"]
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    start = time.monotonic()
    provenance()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    extractor = InceptionFeatures().to(device)
    n = args.n_eval
    kid_size = kid_subset(1000, n, n)
    data = SyntheticDataModule(num_images=n, img_size=args.img_size, batch_size=64)
    rows: list[dict] = []  # anchors, then variants, then checkpoints (see summarise)
    runs_dir = args.runs_dir
    anchor_key = hashlib.sha1(f"n={n} size={args.img_size} renderer={RENDERER_VERSION} "
                              f"features={extractor.name}".encode()).hexdigest()[:12]
    anchor_records = {a: runs_dir / f"anchor_{a}_{anchor_key}.json" for a in ("real", "untrained")}
    with tempfile.TemporaryDirectory(prefix="celebgan-quality-") as tmp:
        tmp = Path(tmp)
        # The held-out features are cached (keyed by the renderer's version): a rerun skips them.
        cache = Path(os.environ.get("CELEBGAN_CACHE", ROOT / "outputs" / "cache"))
        real: torch.Tensor | None = None

        def score(fake: torch.Tensor | None = None, gan=None) -> dict:
            nonlocal real
            if real is None:  # the held-out features, only when something is to be measured
                real = RealFeatureCache(cache).get(data, "test", n, extractor, batch_size=50, device=device)
            return measure(real, extractor, n, fake=fake, gan=gan)

        def features_of(images: torch.Tensor) -> torch.Tensor:
            return torch.cat([extractor(b.to(device)).float().cpu() for b in images.split(50)])

        def anchor(name: str, measure) -> dict:
            record = anchor_records[name]
            if record.is_file() and not args.quick:
                return json.loads(record.read_text())
            result = measure()
            if not args.quick:
                save_record(record, result)
            return result

        def untrained_score() -> dict:
            torch.manual_seed(0)
            untrained = hydra.utils.instantiate(compose_run("vanilla", 0, args, tmp).model).to(device)
            return score(gan=untrained)

        rows.append(summarise("real vs real (valid split)", "-", [anchor(
            "real", lambda: score(RealFeatureCache(cache).get(data, "valid", n, extractor, batch_size=50, device=device)))]))
        if args.full:
            valid = images_of(data.eval_dataset("valid", n))
            rows.append(summarise("real, Gaussian blur sigma 1", "-", [score(features_of(TF.gaussian_blur(valid, 5, 1.0)))]))
            shift = torch.tensor([0.25, 0.0, -0.25])[:, None, None]  # warmer colours, an eighth of the range
            rows.append(summarise("real, colour-shifted", "-", [score(features_of((valid + shift).clamp(-1, 1)))]))
        rows.append(summarise("untrained generator", "0", [anchor("untrained", untrained_score)]))
        print(f"anchors done in {time.monotonic() - start:.0f} s: real vs real FID {rows[0]['fid'][0]:.2f}, "
              f"untrained {rows[-1]['fid'][0]:.2f}", flush=True)

        budget = None
        trained = 0  # runs trained (or checkpoints measured) by this invocation
        for variant in args.variants:
            results, minutes = [], []
            for seed in range(args.seeds):
                if args.only_seeds and seed not in args.only_seeds and not args.cached_only:
                    continue
                cfg = compose_run(variant, seed, args, tmp)
                budget = budget or (cfg.data.num_images, cfg.trainer.max_epochs, cfg.data.batch_size)
                done = runs_dir / f"{variant}_seed{seed}_{run_key(variant, cfg, args, n, extractor.name)}.json"
                if done.is_file() and not args.quick:
                    result = json.loads(done.read_text())
                elif args.cached_only:
                    continue
                else:
                    t0 = time.monotonic()
                    trained += 1
                    train(cfg)
                    result = {"minutes": (time.monotonic() - t0) / 60}
                    gan, _ = load_gan(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
                    result |= score(gan=gan.to(device))
                    if not args.quick:  # the run's last grid, to look at (the headline rows' go to docs/)
                        save_png(to_grid(gan.sample(gan.fixed_z).cpu(), 8), args.grids_dir / done.with_suffix(".png").name)
                    result |= {"variant": variant, "seed": seed}
                    if not args.quick:
                        save_record(done, result)
                    shutil.rmtree(cfg.paths.output_dir, ignore_errors=True)
                results.append(result)
                minutes.append(result["minutes"])
                source = f"from its record of {result['date']}" if "date" in result else \
                    f"{(time.monotonic() - start) / 60:.0f} min in all so far"
                print(f"{variant} seed {seed}: trained in {result['minutes']:.1f} min, FID {result['fid']:.2f}, "
                      f"KID x 1000 {1000 * result['kid']:.2f} ({source})", flush=True)
            row = variant_row(variant, results, minutes, args.seeds)
            rows += [row] if row else []
        for path in args.ckpt:
            gan, config = load_gan(path)
            trained += 1
            rows.append(summarise(f"checkpoint {Path(path).parent.parent.name}", "-",
                                  [score(gan=gan.to(device))]))

    # Anchors first, then the variants best first, then the checkpoints.
    def order(row):
        kind = 1 if row.get("variant") else 2 if row["name"].startswith("checkpoint") else 0
        return kind, row["fid"][0] if kind == 1 else 0
    rows.sort(key=order)
    write_table(args, rows, budget, kid_size, extractor.name, time.monotonic() - start, trained)


def cell(stat: tuple[float, float | None]) -> str:
    mean, spread = stat
    return f"{mean:.2f}" if spread is None else f"{mean:.2f} +- {spread:.2f}"


def off_demo(args) -> list[str]:
    """What of the image size and budget differs from the demo's (experiment=demo): [] at its budget."""
    demo = OmegaConf.load(CONFIG_DIR / "experiment" / "demo.yaml")
    parts = [f"{args.img_size}px"] if args.img_size != demo.data.img_size else []
    budget = [f"{value} {name}" for name, value, default in (
        ("faces", getattr(args, "num_images", None), demo.data.num_images),
        ("epochs", getattr(args, "epochs", None), demo.trainer.max_epochs),
        ("batch", getattr(args, "batch_size", None), demo.data.batch_size)) if value and value != default]
    return parts + ([" x ".join(budget)] if budget else [])


def section_heading(args) -> str:
    """The table's RESULTS.md heading: another image size or budget (the 64px block), or a probe with
    --override, gets a section of its own, so that it never replaces the presets' table at the demo's
    budget (nor another block's or probe's)."""
    parts = off_demo(args)
    parts += [" ".join(sorted(args.override))] if args.override else []
    return f"{SECTION}: {', '.join(parts)}" if parts else SECTION


def write_table(args, rows, budget, kid_subset: int, extractor_name: str, seconds: float, runs: int) -> None:
    """The whole section, generated: nothing in it is hand-written, so a rebuild keeps nothing stale.
    runs: the runs trained (and checkpoints measured) by this invocation; the rest came from records."""
    n = args.n_eval
    floor = rows[0]["fid"][0]
    trained = sorted((r for r in rows if r.get("variant")), key=lambda r: r["fid"][0])
    missing = [v for v in args.variants if not any(r["name"].split(" (")[0] == v for r in trained)]
    num_images, epochs, batch = budget or ("-", "-", "-")
    records = sum(len(r["made"]) for r in rows) - runs
    cost = f"rebuilt from {records} records, no training" if not runs else \
        f"{runs} run(s) trained or measured and {records} read from records, {seconds / 60:.0f} min in all"
    lines = [
        section_heading(args), "",
        f"Table written {datetime.date.today()} on {platform.node() or 'unknown host'} ({os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}"
        f"{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ', no GPU'}), torch {torch.__version__}: "
        f"{'QUICK SMOKE RUN, NOT A RESULT, ' if args.quick else ''}{cost}.",
        f"Command: `python benchmarks/quality.py {' '.join(sys.argv[1:])}`".rstrip(), "",
        f"Each variant trained from seeds 0..{args.seeds - 1} on {num_images} synthetic {args.img_size}px faces "
        f"for {epochs} epochs (batch {batch}{'' if off_demo(args) else ': the demo budget'}"
        f"{'; ' + ' '.join(args.override) if args.override else ''}); "
        f"FID and KID ({kid_subset}-image subsets) of {n} EMA-generator images against {n} held-out real images "
        f"(split=test), features of {extractor_name}. Variant rows: mean +- standard deviation over seeds; "
        f"anchor rows: one measurement. FIDs of {n} images are biased upwards: compare rows, not with published numbers. "
        f"Each run's record (scores, date, commit, machine) is in benchmarks/quality_runs/.",
        "",
        machines(rows), "",
        *([f"Not run yet: {', '.join(missing)}.", ""] if missing else []),
        "| model | train (min) | FID | KID x 1000 | FID / real-vs-real |",
        "|---|---:|---:|---:|---:|",
        *[f"| {r['name']} | {r['minutes']} | {cell(r['fid'])} | {cell(r['kid'])} | {r['fid'][0] / floor:.1f}x |"
          for r in rows],
        "",
    ]
    if len(trained) >= 2:
        best, second = trained[0], trained[1]
        best_hi = best["fid"][0] + (best["fid"][1] or 0)
        second_lo = second["fid"][0] - (second["fid"][1] or 0)
        lines += [f"Best: **{best['name']}**, FID {best['fid'][0]:.2f}, against {second['fid'][0]:.2f} for "
                  f"{second['name']} ({second['fid'][0] / best['fid'][0]:.2f}x; the spreads "
                  f"{'do not ' if best_hi < second_lo else ''}overlap).", ""]
        vanilla = next((r for r in trained if r["name"] == "vanilla"), None)
        if vanilla and best is not vanilla:
            lines += [f"{best['name']} vs vanilla: {vanilla['fid'][0] / best['fid'][0]:.2f}x lower FID.", ""]
    publish(args, "\n".join(lines))


def publish(args, table: str) -> None:
    """Print a benchmark's section and write it into RESULTS.md (a --quick run only with --write)."""
    print(table)
    if args.quick and not args.write:
        print("(--quick: RESULTS.md left alone; add --write to write it anyway)")
        return
    write_section(args.results, table)
    print(f"Wrote {args.results}")


if __name__ == "__main__":
    main()
