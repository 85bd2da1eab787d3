"""FID against images: where one preset overtakes another, past the demo's budget.

Each named preset trains from each seed with the demo's settings (experiment=demo: 32px, its widths,
10,000 synthetic faces, batch 32) for --epochs (default 90: three times the demo's 300,000 images),
keeping its weights every --every epochs. Each kept EMA generator is then measured as
benchmarks/quality.py measures a row: FID and KID of 1,000 images against 1,000 held-out faces
(split=test), Inception features, the same latents. So the point at 30 epochs is the presets table's
budget, and the curve says whether, and after how many images, a preset that lags there (spectral
normalisation against vanilla, say) catches up.

    OMP_NUM_THREADS=1 python benchmarks/curve.py --variants vanilla spectral --only-seeds 0
    OMP_NUM_THREADS=1 python benchmarks/curve.py --variants vanilla spectral --only-seeds 1   # beside it
    python benchmarks/curve.py --variants vanilla spectral --cached-only   # the table and plot from the records
    python benchmarks/curve.py --quick                                    # plumbing only, not a result

Cost per preset and seed on a CPU: the training (three demos) plus one measurement per point (1,000
images through Inception, 3-6 min at a CPU's 3-6 images/s). A run's folder (outputs/curve/PRESET_seedN_KEY,
its last.ckpt, snapshots/ and the points measured so far) stays until its record is complete: an interrupted run resumes its
training or measures only the points it had not, and a finished one trains nothing again.

Records: benchmarks/curve_runs/PRESET_seedN_KEY.json, every point of one run (epochs, images, FID,
KID), keyed as quality.py keys its runs plus the points. Plot: docs/fid_curve.png (the mean over
seeds per preset, the real-vs-real floor dashed). Table: RESULTS.md, its own section.
"""
import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import open_dict
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (compose_run, run_key, measure, records, the anchors)

from celebgan.data.modules import SyntheticDataModule  # noqa: E402
from celebgan.data.synthetic import RENDERER_VERSION  # noqa: E402
from celebgan.io import atomic_write  # noqa: E402
from celebgan.metrics.feature_cache import RealFeatureCache  # noqa: E402
from celebgan.metrics.features import InceptionFeatures  # noqa: E402
from celebgan.plot import HEIGHT_PER_PANEL, WIDTH, draw_panel  # noqa: E402
from celebgan.gan import clock  # noqa: E402
from celebgan.run.checkpoint import load_gan  # noqa: E402
from celebgan.run.lightning_compat import epochs_completed, fit_loop_state, settle_epoch_end  # noqa: E402
from celebgan.train import processes, train  # noqa: E402
from results import write_section  # noqa: E402

ROOT = quality.ROOT
SECTION = "## FID against images (benchmarks/curve.py)"
DEFAULT_VARIANTS, DEFAULT_EPOCHS = ["vanilla", "spectral"], 90  # the plain section's curve
RUNS_DIR = ROOT / "benchmarks" / "curve_runs"
OUT_DIR = ROOT / "outputs" / "curve"
PLOT = ROOT / "docs" / "fid_curve.png"
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)]


def points_of(epochs: int, every: int) -> list[int]:
    """The epochs a run is measured at: every `every`, and the last."""
    return sorted({*range(every, epochs + 1, every), epochs})


def with_snapshots(cfg, every: int):
    """cfg with a second ModelCheckpoint that keeps the weights every `every` epochs as
    snapshots/eNNN.ckpt (NNN: the epochs trained), beside the run's last.ckpt."""
    with open_dict(cfg):
        cfg.callbacks.snapshots = {
            "_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": f"{cfg.paths.output_dir}/snapshots",
            "filename": "e{epoch:03d}", "auto_insert_metric_name": False, "save_top_k": -1,
            "every_n_epochs": every, "enable_version_counter": False}
    return cfg


def snapshot(run: Path, epochs: int) -> Path:
    return run / "snapshots" / f"e{epochs - 1:03d}.ckpt"  # Lightning names it by the 0-based epoch


def trained_epochs(run: Path) -> int:
    """The epochs the run's last.ckpt has completed (one a stop signal wrote mid-epoch counts the
    epochs before it), 0 without one."""
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return 0
    fit_loop = fit_loop_state(torch.load(last, map_location="cpu", weights_only=True))
    if fit_loop is None:
        return 0
    settle_epoch_end(fit_loop)
    return epochs_completed(fit_loop)


def point_checkpoint(run: Path, epochs: int, max_epochs: int) -> Path:
    """The weights after `epochs`: their snapshot, or for the run's end when --every does not divide
    the epochs, the run's last.ckpt (written at that epoch's end)."""
    path = snapshot(run, epochs)
    if path.is_file() or epochs != max_epochs:
        return path
    return run / "checkpoints" / "last.ckpt"


def run_curve(cfg, points: list[int], measure, *, log=print) -> list[dict]:
    """Train cfg (resuming its folder's last.ckpt if it has one), then measure each point's weights:
    [{"epochs", "kimg", "fid", "kid", ...}]. measure(gan) -> {"fid", "kid", ...}. Each point is kept in
    the run folder (points.json) as it is measured, so an interrupted run measures only the rest."""
    run = Path(cfg.paths.output_dir)
    done = trained_epochs(run)
    if done < cfg.trainer.max_epochs:
        if done:
            with open_dict(cfg):
                cfg.resume = str(run / "checkpoints" / "last.ckpt")
            log(f"  resuming {run.name} after epoch {done}")
        train(cfg)
    missing = [e for e in points if not point_checkpoint(run, e, cfg.trainer.max_epochs).is_file()]
    if missing:
        raise RuntimeError(f"{run} has no weights for epochs {missing}: remove the folder to train it again")
    kept = run / "points.json"
    measured = {p["epochs"]: p for p in json.loads(kept.read_text())} if kept.is_file() else {}
    step_images = cfg.data.batch_size * processes(cfg.trainer)
    for epochs in points:
        if epochs in measured:
            continue
        path = point_checkpoint(run, epochs, cfg.trainer.max_epochs)
        gan, _ = load_gan(path)
        steps = clock.training_steps(torch.load(path, map_location="cpu", weights_only=True)["global_step"], gan.n_dis)
        measured[epochs] = {"epochs": epochs, "kimg": clock.images(steps, step_images) / 1000} | measure(gan)
        with atomic_write(kept) as tmp:
            tmp.write_text(json.dumps(sorted(measured.values(), key=lambda p: p["epochs"]), indent=1) + "\n")
        log(f"  {epochs} epochs ({measured[epochs]['kimg']:.4g} kimg): FID {measured[epochs]['fid']:.2f}")
    return [measured[e] for e in points]


def mean_curve(runs: list[dict]) -> list[tuple[float, float, float | None]]:
    """(kimg, mean FID, standard deviation or None) per point, over the runs (seeds) of a preset."""
    out = []
    for i, point in enumerate(runs[0]["curve"]):
        fids = [r["curve"][i]["fid"] for r in runs]
        out.append((point["kimg"], statistics.mean(fids), statistics.stdev(fids) if len(fids) > 1 else None))
    return out


def overtakes(first: list[tuple], second: list[tuple]) -> float | None:
    """The first kimg from which `second`'s mean FID stays below `first`'s, or None."""
    for i, ((kimg, a, _), (_, b, _)) in enumerate(zip(first, second)):
        if all(sb < sa for (_, sa, _), (_, sb, _) in zip(first[i:], second[i:])):
            return kimg
    return None


def draw(curves: dict[str, list[tuple]], floor: float | None, path: Path, n_eval: int = 1000) -> None:
    """The mean FID of each preset against kimg (and the real-vs-real floor, dashed) as a PNG."""
    font = ImageFont.load_default(12)
    image = Image.new("RGB", (WIDTH, HEIGHT_PER_PANEL + 40), "white")
    canvas = ImageDraw.Draw(image)
    series = [(name, name, COLOURS[i % len(COLOURS)], [(k, f) for k, f, _ in points])
              for i, (name, points) in enumerate(curves.items())]
    if floor is not None:
        x_max = max(k for points in curves.values() for k, _, _ in points)
        series.append(("floor", "real vs real", (128, 128, 128), [(0, floor), (x_max, floor)]))
    values = [v for *_, points in series for _, v in points]
    draw_panel(canvas, 0, f"FID ({n_eval:,} images) against the images trained on", (0.0, max(values) * 1.05), series,
               0.0, font, max(k for *_, points in series for k, _ in points), x_label="thousands of images trained on (kimg)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        image.save(tmp, format="png")


def section_heading(args) -> str:
    """RESULTS.md's heading for this set of presets and length: the default pair at 90 epochs keeps
    the plain one, any other set its own section beside it (a high_lr curve does not replace it)."""
    if list(args.variants) == DEFAULT_VARIANTS and args.epochs == DEFAULT_EPOCHS:
        return SECTION
    return f"{SECTION}: {', '.join(args.variants)}, {args.epochs} epochs"


def write_table(args, results: dict[str, list[dict]], floor: float | None, extractor_name: str) -> str:
    """The section: per preset, its mean FID +- spread at each point, and where each preset overtakes
    the first named one."""
    measured = {v: rs for v, rs in results.items() if rs}
    lines = [section_heading(args), "",
             f"Command: `python benchmarks/curve.py {' '.join(sys.argv[1:])}`".rstrip(), "",
             f"Each preset trained with the demo's settings ({args.img_size}px, its widths, {args.num_images} synthetic faces, "
             f"batch {args.batch_size}) for {args.epochs} epochs, from seeds {sorted({r['seed'] for rs in measured.values() for r in rs})}; "
             f"its EMA generator measured every {args.every} epochs: FID and KID of {args.n_eval} images against "
             f"{args.n_eval} held-out faces ({extractor_name}), as benchmarks/quality.py measures a row"
             + (", so the 30-epoch point is the presets table's budget" if 30 in points_of(args.epochs, args.every) else "")
             + f". Mean +- standard deviation over seeds. Records: {shown(args.runs_dir)}/; plot: {shown(args.plot)}."
             + (f" Real vs real: {floor:.2f}." if floor is not None else ""), ""]
    if not measured:
        return "\n".join(lines + ["No records yet.", ""])
    kimgs = [p["kimg"] for p in next(iter(measured.values()))[0]["curve"]]
    lines += ["| preset | seeds | " + " | ".join(f"{k:.4g} kimg" for k in kimgs) + " |",
              "|---|---:|" + "---:|" * len(kimgs)]
    means = {}
    for variant, runs in measured.items():
        means[variant] = mean_curve(runs)
        cells = [f"{m:.1f}" + (f" +- {s:.1f}" if s is not None else "") for _, m, s in means[variant]]
        lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    lines.append("")
    names = list(means)
    for other in names[1:]:
        kimg = overtakes(means[names[0]], means[other])
        lines.append(f"{other} against {names[0]}: " + (
            f"below it from {kimg:.4g} kimg on." if kimg is not None else
            f"not below it to the end ({kimgs[-1]:.4g} kimg)."))
    return "\n".join(lines + [""])


def shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                        help="presets; the first is the one the others are compared with")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only-seeds", type=int, nargs="+", help="of the seeds, run only these")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs of the demo's 10,000 faces (90: 3x its budget)")
    parser.add_argument("--every", type=int, default=15, help="measure every this many epochs")
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--override", action="append", default=[], help="a Hydra override for every run")
    parser.add_argument("--cached-only", action="store_true", help="train nothing: the table and plot from the records")
    parser.add_argument("--quick", action="store_true", help="tiny budget: checks the plumbing, measures nothing")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args()
    if args.every < 2:  # last.ckpt's ModelCheckpoint saves every epoch: Lightning keeps one per cadence
        parser.error(f"--every {args.every}: measure every 2 or more epochs")
    args.img_size, args.num_images, args.batch_size = 32, 10_000, 32
    if args.quick:  # never the committed records, plot or RESULTS.md unless named
        quick = ROOT / "outputs" / "curve_quick"
        args.runs_dir = args.runs_dir if args.runs_dir != RUNS_DIR else quick / "records"
        args.out_dir = args.out_dir if args.out_dir != OUT_DIR else quick / "runs"
        args.plot = args.plot if args.plot != PLOT else quick / "fid_curve.png"
        args.results = args.results if args.results != ROOT / "benchmarks" / "RESULTS.md" else quick / "RESULTS.md"
        args.img_size, args.num_images, args.epochs, args.every, args.n_eval, args.seeds = 16, 256, 4, 2, 24, 1
        args.override = [*args.override, "model.generator.ngf=8", "model.discriminator.ndf=8"]
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    quality.provenance()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    extractor = InceptionFeatures().to(device)
    n = args.n_eval
    cache = Path(os.environ.get("CELEBGAN_CACHE", ROOT / "outputs" / "cache"))
    real = None

    def measure(gan) -> dict:
        nonlocal real
        if real is None:
            data = SyntheticDataModule(num_images=n, img_size=args.img_size, batch_size=64)
            real = RealFeatureCache(cache).get(data, "test", n, extractor, batch_size=50, device=device)
        return quality.measure(real, extractor, n, gan=gan.to(device))

    points = points_of(args.epochs, args.every)
    qargs = SimpleNamespace(img_size=args.img_size, num_images=args.num_images, epochs=args.epochs,
                            batch_size=args.batch_size, override=args.override)
    results: dict[str, list[dict]] = {}
    start = time.monotonic()
    for variant in args.variants:
        results[variant] = []
        for seed in range(args.seeds):
            cfg = quality.compose_run(variant, seed, qargs, args.out_dir)
            key = quality.run_key(variant, cfg, qargs, n, extractor.name) + f" every={args.every}"
            name = f"{variant}_seed{seed}_{hashlib.sha1(key.encode()).hexdigest()[:12]}"
            record = args.runs_dir / f"{name}.json"
            if record.is_file() and not args.quick:  # another process's seeds too: the table has every record
                results[variant].append(json.loads(record.read_text()))
                continue
            if args.cached_only or (args.only_seeds and seed not in args.only_seeds):
                continue
            with open_dict(cfg):  # the folder is the record's: another budget or --every is another run
                cfg.paths.output_dir = str(args.out_dir / name)
            cfg = with_snapshots(cfg, args.every)
            print(f"{variant} seed {seed}: {args.epochs} epochs, measured at {points}", flush=True)
            if args.quick:
                shutil.rmtree(cfg.paths.output_dir, ignore_errors=True)
            curve = run_curve(cfg, points, measure, log=lambda line: print(line, flush=True))
            result = {"variant": variant, "seed": seed, "curve": curve}
            quality.save_record(record, result)
            results[variant].append(result)
            shutil.rmtree(cfg.paths.output_dir, ignore_errors=True)  # the record holds what it was for
            print(f"  ({(time.monotonic() - start) / 60:.0f} min in all so far)", flush=True)
    anchor_key = hashlib.sha1(f"n={n} size={args.img_size} renderer={RENDERER_VERSION} "
                              f"features={extractor.name}".encode()).hexdigest()[:12]
    anchor = quality.RUNS_DIR / f"anchor_real_{anchor_key}.json"
    floor = json.loads(anchor.read_text())["fid"] if anchor.is_file() else None
    measured = {v: rs for v, rs in results.items() if rs}
    if measured:
        draw({v: mean_curve(rs) for v, rs in measured.items()}, floor, args.plot, n)
    table = write_table(args, results, floor, extractor.name)
    print(table)
    write_section(args.results, table)
    print(f"Wrote {args.results}" + (f" and {args.plot}" if measured else ""))


if __name__ == "__main__":
    main()
