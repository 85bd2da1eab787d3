"""Faces on request: the attribute-conditional presets on the synthetic faces, 3 seeds.

Each conditional preset (model=projection, model=acgan) trains at the demo's budget (experiment=demo:
32px, its widths, batch and epochs) on all 8 attributes of the synthetic faces (data.attributes=all),
from each seed, and its EMA generator is measured three ways:

- quality: FID/KID of n_eval images (their attributes training label rows, as often as the data holds them) against
  held-out synthetic faces, as benchmarks/quality.py measures every preset, next to the
  unconditional high_lr row at the same budget (read from quality.py's records);
- obedience: per attribute, the share of faces asked to have it that the attribute classifier (the
  judge, celebgan.metrics.judge, trained once on real faces and cached; never the discriminator) labels
  as having it, the share asked not to have it that it labels as not having it, and their mean
  (balanced accuracy), beside the judge's own balanced accuracy on held-out real faces: the ceiling.
  Two columns: consistent requests (training label rows that have / lack the attribute, the
  headline) and independent ones (the attribute set in rows drawn each from its frequency, as
  celebgan asked before it kept a label table);
- per-condition FID: for a few attribute sets, real held-out faces with that set against faces
  asked for exactly the label sets of those real faces, and, for contrast, against faces of the
  same model asked for nothing in particular (attributes: training label rows).

    OMP_NUM_THREADS=1 python benchmarks/conditional.py    # projection and acgan, 3 seeds (see below)
    python benchmarks/conditional.py --presets projection --seeds 1
    OMP_NUM_THREADS=1 python benchmarks/conditional.py --presets projection --only-seeds 0 2   # and 1 beside it
    python benchmarks/conditional.py --cached-only        # the tables from the records alone
    python benchmarks/conditional.py --remeasure          # measure the kept checkpoints again (no training)
    python benchmarks/conditional.py --quick              # plumbing only, not a result

Cost: 6 runs at the demo's budget (3-5 min each on a 2-core CPU), the judge once (a few minutes on a
CPU), and per run n_eval + 2 x n_condition x 3 images through Inception (2,500 by default: about 10
min per run at a CPU's 3-6 images/s, seconds on a GPU); the numbers are said before anything starts.

Each finished run's scores are a JSON record in benchmarks/conditional_runs/ (keyed as quality.py keys
its runs, plus the measurement settings); its run folder, last.ckpt included, stays under
outputs/conditional/PRESET_seedN/ so that obedience can be measured again. The toggle grid of the
best run's seed 0 (one row per attribute, each face without and with it) goes to
docs/conditional_toggle.png; the tables to benchmarks/RESULTS.md (their own section).
"""
import argparse
import datetime
import hashlib
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (compose_run, run_key, the high_lr records)

from celebgan.data.modules import SyntheticDataModule  # noqa: E402
from celebgan.gan.images import conditions  # noqa: E402
from celebgan.metrics.feature_cache import RealFeatureCache  # noqa: E402
from celebgan.metrics.features import InceptionFeatures, RandomFeatures  # noqa: E402
from celebgan.metrics.judge import RECIPE_VERSION, Judge  # noqa: E402
from celebgan.metrics.obedience import in_model_order, matching  # noqa: E402
from celebgan.metrics.registry import calc_metrics  # noqa: E402
from celebgan.run.checkpoint import load_gan, real_subset  # noqa: E402
from celebgan.sample import write_toggle  # noqa: E402
from celebgan.train import train  # noqa: E402

ROOT = quality.ROOT
SECTION = "## Attribute-conditional generation (benchmarks/conditional.py)"
PRESETS = ["projection", "acgan"]
RUNS_DIR = ROOT / "benchmarks" / "conditional_runs"
OUT_DIR = ROOT / "outputs" / "conditional"
GRID = ROOT / "docs" / "conditional_toggle.png"
UNCONDITIONAL = "high_lr"  # the recommended unconditional preset, the demo's
# Attribute sets of the per-condition FID: a common attribute, a rare one, and a pair.
CONDITIONS = ["Smiling=1", "Eyeglasses=1", "Blond_Hair=1,Smiling=0"]
# The judge: celebgan.evaluate's and training's (conf/metrics/classifier/default.yaml), read from there.
CLASSIFIER = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "metrics" / "classifier" / "default.yaml"))
QUICK_CLASSIFIER = {"max_train": 256, "max_eval": 128, "epochs": 1, "batch_size": 64, "lr": 2e-3, "width": 8}


def parse_condition(text: str) -> dict[str, float]:
    """'Blond_Hair=1,Smiling=0' -> {"Blond_Hair": 1.0, "Smiling": 0.0}."""
    condition = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if value not in ("0", "1"):
            raise argparse.ArgumentTypeError(f"{text!r}: write NAME=0 or NAME=1, comma-separated")
        condition[name.strip()] = float(value)
    return condition


def condition_text(condition: dict[str, float]) -> str:
    return ", ".join(f"{name}" if value else f"no {name}" for name, value in condition.items())


def quality_args(args, override: list[str]) -> SimpleNamespace:
    """The namespace quality.compose_run and quality.run_key read: the same budget as quality.py's."""
    return SimpleNamespace(img_size=args.img_size, num_images=args.num_images, epochs=args.epochs,
                           batch_size=args.batch_size, override=override)


@torch.no_grad()
def features_of(gan, extractor, z: torch.Tensor, labels: torch.Tensor | None, device: str, batch_size: int = 50):
    """(N, F) features of the faces of latents z asked for `labels` (N, A)."""
    chunks = zip(z.split(batch_size), labels.split(batch_size) if labels is not None else [None] * len(z))
    return torch.cat([extractor(gan.sample(zb, yb).to(device)).float().cpu() for zb, yb in chunks])


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    return calc_metrics(["fid"], real=real, fake=fake)["fid"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=PRESETS, help=f"conditional presets (default: {PRESETS})")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only-seeds", type=int, nargs="+",
                        help="of the seeds, train only these; the others' records are read (two processes side by side "
                             "split the seeds)")
    parser.add_argument("--n-eval", type=int, default=1000, help="generated and held-out real images per FID/KID")
    parser.add_argument("--n-obey", type=int, default=500, help="faces per attribute and side for obedience")
    parser.add_argument("--n-ceiling", type=int, default=2000, help="held-out real faces the judge's ceiling is measured on")
    parser.add_argument("--n-condition", type=int, default=250, help="real (and generated) faces per condition's FID")
    parser.add_argument("--conditions", nargs="+", type=parse_condition, default=[parse_condition(c) for c in CONDITIONS],
                        help=f"attribute sets of the per-condition FID (default: {' '.join(CONDITIONS)})")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--num-images", type=int, help="synthetic training images (default: the demo's)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the demo's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the demo's)")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override for every run")
    parser.add_argument("--cached-only", action="store_true", help="train nothing: the tables from the records")
    parser.add_argument("--remeasure", action="store_true",
                        help="measure the kept checkpoints (outputs/conditional/) again instead of training")
    parser.add_argument("--quick", action="store_true", help="tiny budget and a random feature network: plumbing only")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--write", action="store_true", help="with --quick: write --results anyway")
    parser.add_argument("--runs-dir", type=Path, help=f"per-run records (default: {RUNS_DIR})")
    parser.add_argument("--out-dir", type=Path, help=f"run folders, last.ckpt kept (default: {OUT_DIR})")
    parser.add_argument("--grid", type=Path, help=f"the toggle grid's PNG (default: {GRID})")
    args = parser.parse_args()
    unknown = sorted(set(args.presets) - set(quality.CONDITIONAL))
    if unknown:
        parser.error(f"unknown presets {unknown}: the conditional ones are {quality.CONDITIONAL}")
    classifier = CLASSIFIER
    if args.quick:  # never the committed records, the docs' picture or RESULTS.md unless named
        quick = ROOT / "outputs" / "conditional_quick"
        args.runs_dir, args.out_dir = args.runs_dir or quick / "records", args.out_dir or quick / "runs"
        args.grid = args.grid or quick / "toggle.png"
        args.num_images, args.epochs, args.img_size, args.seeds = 256, 1, 16, min(args.seeds, 1)
        args.n_eval, args.n_obey, args.n_ceiling, args.n_condition = 24, 8, 64, 12
        args.override = [*args.override, "model.generator.ngf=8", "model.discriminator.ndf=8"]
        classifier = QUICK_CLASSIFIER
    runs_dir, out_dir, grid_path = args.runs_dir or RUNS_DIR, args.out_dir or OUT_DIR, args.grid or GRID
    args.runs_dir, args.out_dir, args.grid = runs_dir, out_dir, grid_path  # for the tables' text
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("celebgan.metrics.judge").setLevel(logging.INFO)  # the judge's cost and cache
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    start = time.monotonic()
    quality.provenance()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    extractor = (RandomFeatures() if args.quick else InceptionFeatures()).to(device)
    n = args.n_eval
    cache = Path(os.environ.get("CELEBGAN_CACHE", ROOT / "outputs" / "cache"))
    override = ["data.attributes=all", *args.override]
    measure_settings = {"n_obey": args.n_obey, "n_ceiling": args.n_ceiling, "n_condition": args.n_condition,
                        "conditions": args.conditions, "classifier": classifier, "judge_recipe": RECIPE_VERSION,
                        "questions": "consistent and independent"}

    runs = len(args.presets) * args.seeds
    per_run = n + 2 * args.n_condition * len(args.conditions)
    print(f"{runs} run(s) of {', '.join(args.presets)} (finished ones are read from {shown(runs_dir)}); each measured "
          f"on {per_run:,} images through {extractor.name} and {2 * args.n_obey:,} per attribute through the judge; "
          f"once: {n + args.n_condition * len(args.conditions):,} real images through {extractor.name}.", flush=True)
    real_cache: dict = {}

    def real_features(config: dict, names: list[str]) -> dict:
        """The real sides, once per benchmark: held-out faces for FID/KID (quality.py's, cached), the
        judge (celebgan-evaluate's and training's Judge) with its ceiling, and each condition's matching
        real faces with their label sets."""
        if real_cache:
            return real_cache
        data = SyntheticDataModule(num_images=n, img_size=args.img_size, batch_size=64)
        real_cache["all"] = RealFeatureCache(cache).get(data, "test", n, extractor, batch_size=50, device=device)
        # Seed 1: the latents, label rows and held-out faces the records were measured with.
        judge = Judge(data_config=config["data"], cache_dir=cache, classifier=classifier, n=args.n_obey,
                      n_ceiling=args.n_ceiling, seed=1, read=real_subset)
        judge.prepare(names, device)
        pool, data_names = real_subset(config, "test", max(args.n_ceiling, 20 * args.n_condition), seed=1)
        images = torch.stack([pool[i][0] for i in range(len(pool))])
        labels = torch.stack([torch.as_tensor(pool[i][1]) for i in range(len(pool))])
        per_condition = []
        for condition in args.conditions:
            keep = matching(labels, data_names, condition).nonzero().flatten()[:args.n_condition]
            feats = torch.cat([extractor(b.to(device)).float().cpu() for b in images[keep].split(50)]) \
                if len(keep) else torch.empty(0)
            per_condition.append({"condition": condition, "labels": labels[keep], "features": feats})
        real_cache.update(judge=judge, data_names=data_names, per_condition=per_condition)
        return real_cache

    def measure(gan, config: dict) -> dict:
        real = real_features(config, gan.attr_names)
        # Asked for n training label rows at once (conditions), from latents drawn at once: the faces of the records.
        z = torch.randn(n, gan.generator.nz, 1, 1, generator=torch.Generator().manual_seed(0))
        fake = features_of(gan, extractor, z, conditions(gan, n, seed=0), device)
        scores = calc_metrics(["fid", "kid", "obedience"], real=real["all"], fake=fake, gan=gan, judge=real["judge"],
                              kid_subset_size=1000, kid_subsets=100)
        obeyed = scores.pop("obedience")
        scores |= {"ceiling": obeyed["ceiling"], "obedience": {k: obeyed[k] for k in ("per_attribute", "mean")},
                   "obedience_independent": obeyed["independent"]}
        scores["per_condition"] = []
        for k, cond in enumerate(real["per_condition"]):
            m = len(cond["labels"])
            if m < 2:
                scores["per_condition"].append({"condition": cond["condition"], "n": m, "asked": None, "not_asked": None})
                continue
            zc = torch.randn(m, gan.generator.nz, 1, 1, generator=torch.Generator().manual_seed(100 + k))
            asked = in_model_order(cond["labels"], real["data_names"], gan.attr_names)
            scores["per_condition"].append({
                "condition": cond["condition"], "n": m,
                "asked": fid(cond["features"], features_of(gan, extractor, zc, asked, device)),
                "not_asked": fid(cond["features"], features_of(gan, extractor, zc, conditions(gan, m, seed=100 + k),
                                                               device))})
        return scores

    results: dict[str, list[dict]] = {}
    budget = None
    toggle_source = {}
    for preset in args.presets:
        results[preset] = []
        for seed in range(args.seeds):
            cfg = quality.compose_run(preset, seed, quality_args(args, override), out_dir)
            budget = budget or (cfg.data.num_images, cfg.trainer.max_epochs, cfg.data.batch_size)
            key = quality.run_key(preset, cfg, quality_args(args, override), n, extractor.name)
            key = hashlib.sha1((key + json.dumps(measure_settings, sort_keys=True)).encode()).hexdigest()[:12]
            record = runs_dir / f"{preset}_seed{seed}_{key}.json"
            run = Path(cfg.paths.output_dir)
            ckpt = run / "checkpoints" / "last.ckpt"
            cached = args.cached_only or bool(args.only_seeds and seed not in args.only_seeds)
            if record.is_file() and not args.remeasure and (cached or not args.quick):
                result = json.loads(record.read_text())
            elif cached or (args.remeasure and not ckpt.is_file()):
                if args.remeasure:
                    print(f"{preset} seed {seed}: no checkpoint at {shown(ckpt)} to measure again; skipped", flush=True)
                continue
            else:
                result = {}
                if not args.remeasure:
                    shutil.rmtree(run, ignore_errors=True)  # a half-finished run starts again
                    t0 = time.monotonic()
                    train(cfg)
                    result["minutes"] = (time.monotonic() - t0) / 60
                else:
                    result["minutes"] = json.loads(record.read_text())["minutes"] if record.is_file() else None
                gan, config = load_gan(ckpt)
                result |= measure(gan.to(device), config)
                result |= {"preset": preset, "seed": seed, "ckpt": shown(ckpt)}
                quality.save_record(record, result)
            results[preset].append(result)
            if seed == 0 and ckpt.is_file():
                toggle_source[preset] = ckpt
            minutes = f"{result['minutes']:.1f} min" if result.get("minutes") is not None else "kept checkpoint"
            print(f"{preset} seed {seed}: {minutes}, FID {result['fid']:.2f}, obedience "
                  f"{result['obedience']['mean']:.3f} (independent requests "
                  f"{result['obedience_independent']['mean']:.3f}; the judge's ceiling {result['ceiling']['mean']:.3f}) "
                  f"({(time.monotonic() - start) / 60:.0f} min in all)", flush=True)

    ranked = sorted((p for p in results if results[p]), key=lambda p: -statistics.mean(
        r["obedience"]["mean"] for r in results[p]))
    if ranked and ranked[0] in toggle_source:
        gan, _ = load_gan(toggle_source[ranked[0]])
        write_toggle(gan.to(device), grid_path, rows=gan.attr_names, faces=4, scale=4, seed=0, batch_size=64,
                     fixed={}, truncation=None)
        print(f"Wrote {grid_path} ({ranked[0]}, seed 0)")
    unconditional = unconditional_row(args, n, extractor.name, out_dir)
    write_tables(args, results, unconditional, budget, extractor.name, time.monotonic() - start, ranked)


def unconditional_row(args, n: int, extractor_name: str, out_dir: Path) -> dict | None:
    """high_lr at the same budget, from its quality.py records (None without them)."""
    qargs = quality_args(args, list(args.override))
    found = []
    for seed in range(max(args.seeds, 3)):  # every seed quality.py measured (its default: 3)
        cfg = quality.compose_run(UNCONDITIONAL, seed, qargs, out_dir)
        record = quality.RUNS_DIR / f"{UNCONDITIONAL}_seed{seed}_{quality.run_key(UNCONDITIONAL, cfg, qargs, n, extractor_name)}.json"
        if record.is_file():
            found.append(json.loads(record.read_text()))
    if found:
        return quality.summarise(UNCONDITIONAL, f"{statistics.mean(r['minutes'] for r in found):.1f}", found) | \
            {"source": f"{len(found)} record(s) in benchmarks/quality_runs/"}
    return None  # every row from records: `python benchmarks/quality.py --variants high_lr` makes them


def shown(path: Path) -> str:
    path = Path(path).absolute()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def stat_cell(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.mean(values)
    return f"{mean:.{digits}f}" if len(values) < 2 else f"{mean:.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def write_tables(args, results: dict[str, list[dict]], unconditional: dict | None, budget, extractor_name: str,
                 seconds: float, ranked: list[str]) -> None:
    num_images, epochs, batch = budget or ("-", "-", "-")
    measured = [p for p in args.presets if results.get(p)]
    missing = [p for p in args.presets if not results.get(p)]
    ceiling = next((r["ceiling"] for p in measured for r in results[p] if r.get("ceiling")), None)
    names = list(next(iter(results[measured[0]]))["obedience"]["per_attribute"]) if measured else []

    def seeds(p):
        k = len(results[p])
        return "" if k == args.seeds else f" ({k} of {args.seeds} seeds)"
    lines = [
        SECTION, "",
        f"{datetime.date.today()}, {platform.node() or 'unknown host'} ({os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}"
        f"{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ', no GPU'}), torch {torch.__version__}, "
        f"{'QUICK SMOKE RUN, NOT A RESULT, ' if args.quick else ''}"
        f"{'rebuilt from the records, no training' if args.cached_only else f'{seconds / 60:.0f} min in all'}.",
        quality.machines([{"name": p, "made": [quality.made_where(r) | {"seed": r.get("seed")} for r in rs]}
                          for p, rs in results.items() if rs]), 
        f"Command: `python benchmarks/conditional.py {' '.join(sys.argv[1:])}`".rstrip(), "",
        f"Each preset trained from seeds 0..{args.seeds - 1} on {num_images} synthetic {args.img_size}px faces "
        f"for {epochs} epochs (batch {batch}: the demo's budget), conditioned on all {len(names) or 'the'} attributes "
        f"(data.attributes=all). FID and KID of {args.n_eval} EMA-generator images (attributes: training label "
        f"rows, as often as the data holds them) against {args.n_eval} held-out faces, features of {extractor_name}, as "
        f"benchmarks/quality.py measures. Mean +- standard deviation over seeds. Per-run records in "
        f"{shown(args.runs_dir)}/; run folders (last.ckpt) in {shown(args.out_dir)}/.", "",
        *([f"Not run yet: {', '.join(missing)}.", ""] if missing else []),
        "| model | train (min) | FID | KID x 1000 | obedience (consistent) | obedience (independent) | judge's ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    if unconditional:
        lines.append(f"| {UNCONDITIONAL} (unconditional; {unconditional['source']}) | {unconditional['minutes']} | "
                     f"{quality.cell(unconditional['fid'])} | {quality.cell(unconditional['kid'])} | - | - | - |")
    else:
        lines.append(f"| {UNCONDITIONAL} (unconditional) | not measured at this budget: "
                     f"`python benchmarks/quality.py --variants {UNCONDITIONAL}` | | | | | |")
    for p in measured:
        rs = results[p]
        lines.append(f"| {p}{seeds(p)} | {stat_cell([r.get('minutes') for r in rs], 1)} | "
                     f"{stat_cell([r['fid'] for r in rs])} | {stat_cell([1000 * r['kid'] for r in rs])} | "
                     f"{stat_cell([r['obedience']['mean'] for r in rs], 3)} | "
                     f"{stat_cell([r['obedience_independent']['mean'] for r in rs], 3)} | "
                     f"{stat_cell([r['ceiling']['mean'] for r in rs], 3)} |")
    if ceiling:
        lines.append(f"| judge on held-out real faces (the ceiling) | - | - | - | {ceiling['mean']:.3f} | "
                     f"{ceiling['mean']:.3f} | {ceiling['mean']:.3f} |")
    lines += ["", f"Obedience per attribute: of {args.n_obey} faces asked to have it, the share the judge "
              f"(celebgan.metrics.judge's classifier, independent of every discriminator) labels as having it / of "
              f"{args.n_obey} faces of the same latents asked not to, the share it labels as not having it; then "
              f"their mean (balanced accuracy: 0.5 ignores the attribute, 1 always obeys). Consistent requests "
              f"are label rows of the training split that have (lack) the attribute, drawn as often as the data "
              f"holds them; independent requests set the attribute in rows whose other attributes are drawn each "
              f"from its frequency (celebgan's sampling before it kept a label table: blond and black-haired at "
              f"once). The ceiling: the judge's own on {args.n_ceiling} held-out real faces.", "",
              "| attribute | ceiling | " + " | ".join(f"{p}: consistent | {p}: independent" for p in measured) + " |",
              "|---|---:|" + "---:|---:|" * len(measured)]
    for name in names:
        cells = []
        for p in measured:
            per = [r["obedience"]["per_attribute"][name] for r in results[p]]
            cells.append(f"{stat_cell([v['with'] for v in per])} / {stat_cell([v['without'] for v in per])} "
                         f"-> **{stat_cell([v['balanced'] for v in per], 3)}**")
            independent = [r["obedience_independent"]["per_attribute"][name]["balanced"] for r in results[p]]
            cells.append(stat_cell(independent, 3))
        c = ceiling["per_attribute"].get(name) if ceiling else None
        lines.append(f"| {name} | {c['balanced']:.3f} | " if c and c["balanced"] is not None else f"| {name} | - | ")
        lines[-1] += " | ".join(cells) + " |"
    lines += ["", f"Per-condition FID: up to {args.n_condition} held-out real faces with the attribute set against "
              "as many generated faces asked for those faces' own label sets (asked), and against faces asked for "
              "nothing in particular (not asked: training label rows drawn at random). Small sets: the FIDs "
              "are biased upwards; compare columns, not with the table above.", "",
              "| condition | real faces | " + " | ".join(f"{p}: asked | {p}: not asked" for p in measured) + " |",
              "|---|---:|" + "---:|---:|" * len(measured)]
    for k, condition in enumerate(args.conditions):
        counts = {r["per_condition"][k]["n"] for p in measured for r in results[p] if len(r["per_condition"]) > k}
        cells = []
        for p in measured:
            per = [r["per_condition"][k] for r in results[p] if len(r["per_condition"]) > k]
            cells.append(f"{stat_cell([v['asked'] for v in per])} | {stat_cell([v['not_asked'] for v in per])}")
        lines.append(f"| {condition_text(condition)} | {max(counts) if counts else '-'} | " + " | ".join(cells) + " |")
    if ranked:
        lines += ["", f"Most obedient: **{ranked[0]}**; its seed-0 toggle grid (each attribute off | on for the "
                  f"same faces) is {shown(args.grid)}."]
    quality.publish(args, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
