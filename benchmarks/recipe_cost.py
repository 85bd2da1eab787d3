"""What a recipe change costs in time: the demo's training step against the same step with Hydra
overrides (a wider D, a wider G, ...), measured side by side in one process.

Each arm is `experiment=demo` (32px, the demo's widths, batch 32, its preset) plus its overrides,
built as a run is (celebgan.train.build, no logger, checkpoints or grids), on the synthetic faces.
The arms take turns: --rounds rounds, each timing --steps training steps of every arm after a few
warm-up steps, so that a machine's load, which drifts, falls on all of them alike. The table gives
each arm's training steps per second (median over rounds) and its time relative to the demo, which
is what `make demo`'s wall time scales by (the demo's time is almost all training steps).

    OMP_NUM_THREADS=1 python benchmarks/recipe_cost.py                      # the demo vs D at ndf 64
    python benchmarks/recipe_cost.py --arm "wide D:model.discriminator.ndf=64" \\
        --arm "wide G and D:model.discriminator.ndf=64,model.generator.ngf=64"

The threads are the command's (threads=auto) unless OMP_NUM_THREADS says otherwise; RESULTS.md gets
the table with the date, the machine, the threads and the command.
"""
import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from celebgan.conf import CONFIG_DIR  # noqa: E402
from celebgan.train import build  # noqa: E402
from results import write_section  # noqa: E402  (RESULTS.md's one writer)

SECTION = "## Recipe cost: training steps side by side (benchmarks/recipe_cost.py)"
DEFAULT_ARMS = ["wide D (ndf 64):model.discriminator.ndf=64"]


class StepClock(L.Callback):
    """Wall time of the training steps after the first `warmup` ones."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps += 1
        if self.steps == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def arm_config(overrides: list[str], steps: int, cache: Path, work: Path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=demo", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(work)
        cfg.callbacks, cfg.logger = {}, None
        cfg.data.cache_dir = str(cache)
        cfg.trainer.accelerator = "cpu" if not torch.cuda.is_available() else cfg.trainer.accelerator
        cfg.trainer.max_epochs, cfg.trainer.max_steps = -1, steps
        cfg.trainer.enable_checkpointing = cfg.trainer.enable_progress_bar = cfg.trainer.enable_model_summary = False
    return cfg


def steps_per_second(overrides: list[str], steps: int, warmup: int, cache: Path, work: Path) -> float:
    clock = StepClock(warmup)
    built = build(arm_config(overrides, steps + warmup, cache, work), callbacks=[clock])
    built.trainer.fit(built.model, datamodule=built.datamodule)
    return (clock.steps - clock.warmup) / (clock.end - clock.start)


def parse_arm(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    return name, [o for o in overrides.split(",") if o]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", action="append", default=None, metavar="NAME:OVERRIDE,OVERRIDE",
                        help=f"an arm beside the demo (default: {DEFAULT_ARMS})")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps per arm and round")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="a few steps: checks the script, not a result")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.rounds = 3, 2, 1
    arms = [("demo (experiment=demo)", [])] + [parse_arm(a) for a in (args.arm or DEFAULT_ARMS)]
    cache = Path(os.environ.get("CELEBGAN_CACHE", ROOT / "outputs" / "cache"))
    rates: dict[str, list[float]] = {name: [] for name, _ in arms}
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            for name, overrides in arms:
                rates[name].append(steps_per_second(overrides, args.steps, args.warmup, cache, Path(work)))
                print(f"round {r + 1}/{args.rounds}: {name}: {rates[name][-1]:.2f} training steps/s", flush=True)
    demo = statistics.median(rates[arms[0][0]])
    threads = torch.get_num_threads()
    lines = [
        SECTION, "",
        f"{datetime.date.today()}, {platform.node() or 'unknown host'} ({os.cpu_count()} CPUs, "
        f"{torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}), torch {torch.__version__}, "
        f"{threads} thread(s){', QUICK SMOKE RUN, NOT A RESULT' if args.quick else ''}.",
        f"Command: `python benchmarks/recipe_cost.py {shlex.join(sys.argv[1:])}`".rstrip(), "",
        f"Training steps of `experiment=demo` (batch 32, 32px) and of each arm, built as a run is; {args.rounds} "
        f"rounds in turn, {args.steps} timed steps per arm and round after {args.warmup} warm-up steps; the "
        "median over rounds. Time x: the arm's time per step over the demo's, measured in the same run: what "
        "`make demo`'s wall time scales by for the same images.", "",
        "| arm | overrides | training steps/s | time x |",
        "|---|---|---:|---:|",
        *[f"| {name} | {' '.join(o) or '-'} | {statistics.median(rates[name]):.2f} | "
          f"{demo / statistics.median(rates[name]):.2f}x |" for name, o in arms],
        "",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        write_section(args.results, table)
        print(f"Wrote {args.results}")


if __name__ == "__main__":
    main()
