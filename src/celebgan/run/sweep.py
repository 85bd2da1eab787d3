"""A --multirun sweep's closing table: each job writes JOB/summary.json when it ends
(`write_job_summary`), and `SweepSummary`, the Hydra callback of conf/hydra/default.yaml, reads
them when the sweep ends into one table of all its jobs, printed and written as SWEEP/summary.md.

`tensorboard_command` is the TensorBoard hint of a run or a sweep, as it works pasted into the shell.

It also keeps a sweep's console and folders plain: Optuna's lines come through the command's
logging (without the colour codes its own handler writes into any file), and a sweep that fails
before any job ran (a bad override) leaves no folder holding only Hydra's multirun.yaml.
"""
import atexit
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from celebgan.io import atomic_write

SUMMARY = "summary.json"
# (column, key of what train() returns, format)
COLUMNS = [("d_loss", "train_epoch/d_loss", ".3f"), ("g_loss", "train_epoch/g_loss", ".3f"),
           ("FID", "metrics/fid", ".4g"), ("KID", "metrics/kid", ".4g")]


def write_job_summary(job_dir: str | Path, overrides: str, metrics: dict[str, float]) -> Path:
    """JOB/summary.json: what the sweep's table shows of one finished job. overrides: what sets the
    job apart (Hydra's override_dirname, e.g. `model=high_lr,seed=1`)."""
    values = {column: metrics[key] for column, key, _ in COLUMNS if key in metrics}
    path = Path(job_dir) / SUMMARY
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({"overrides": overrides, "final": values}, indent=2) + "\n")
    return path


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder of the sweep (a folder holding Hydra's .hydra), in the order the jobs
    ran; a job that left no summary.json (it failed, or is still running) has no final values."""
    rows = []
    for job in sweep_dir.iterdir():
        overrides_file = job / ".hydra" / "overrides.yaml"
        if not overrides_file.is_file():
            continue
        summary_file = job / SUMMARY
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
        number, _, named = job.name.partition("_")  # Hydra's N_<override_dirname> (conf/hydra)
        overrides = summary["overrides"] if summary else named or ",".join(OmegaConf.load(overrides_file))
        rows.append({"job": int(number) if number.isdigit() else job.name, "overrides": overrides,
                     "final": summary["final"] if summary else None, "folder": str(job)})
    return sorted(rows, key=lambda row: (isinstance(row["job"], str), row["job"]))


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table; a column no job measured (FID, KID without metrics) is left out."""
    columns = [(name, fmt) for name, _, fmt in COLUMNS if any(r["final"] and name in r["final"] for r in rows)]
    lines = ["| job | overrides | " + " | ".join(name for name, _ in columns) + (" | " if columns else "") + "folder |",
             "|---|---|" + "---|" * len(columns) + "---|"]
    for row in rows:
        final = row["final"]
        cells = [format(final[name], fmt) if final and name in final else ("failed" if final is None else "-")
                 for name, fmt in columns]
        lines.append(f"| {row['job']} | {row['overrides'] or '(defaults)'} | "
                     + "".join(f"{cell} | " for cell in cells) + f"{row['folder']} |")
    return "\n".join(lines)


def _remove_if_unused(sweep_dir: Path) -> None:
    if sweep_dir.is_dir() and all(p.name == "multirun.yaml" for p in sweep_dir.iterdir()):
        shutil.rmtree(sweep_dir, ignore_errors=True)


class SweepSummary(Callback):
    """At the end of a --multirun sweep: the table of every job (its overrides, final losses, FID
    and KID when measured, folder) on the console and in SWEEP/summary.md, with the TensorBoard
    command that shows all its runs side by side."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).absolute()
        # A sweep that ends before its first job (an override Hydra cannot compose) leaves only the
        # multirun.yaml Hydra wrote when it began.
        atexit.register(_remove_if_unused, sweep_dir)
        if "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")):
            import optuna

            # Optuna's own handler colours its lines with escape codes, also in a file or a CI log.
            optuna.logging.disable_default_handler()
            optuna.logging.enable_propagation()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).absolute()
        rows = job_rows(sweep_dir) if sweep_dir.is_dir() else []
        if not rows:
            return
        text = (f"Sweep of {len(rows)} job(s) in {sweep_dir}\n\n{table(rows)}\n\n"
                f"All runs side by side: {tensorboard_command(sweep_dir)}\n")
        with atomic_write(sweep_dir / "summary.md") as tmp:
            tmp.write_text(text)
        # print: the root logger still writes into the last job's log file at this point.
        print(f"\n{text}Written to {sweep_dir / 'summary.md'}", flush=True)


def tensorboard_command(logdir: Path) -> str:
    """The command that serves a run in TensorBoard, as it works pasted into the shell that started the
    run: `tensorboard` where it is on PATH, else the one installed beside this interpreter (a virtual
    environment that is not activated), else through this interpreter."""
    # --samples_per_plugin: every grid (up to 1,000), not TensorBoard's 10 per tag.
    where = f"--logdir {shlex.quote(str(logdir))} --samples_per_plugin images=1000"
    if shutil.which("tensorboard"):
        return f"tensorboard {where}"
    beside = Path(sys.executable).parent / "tensorboard"
    if beside.is_file() and os.access(beside, os.X_OK):
        return f"{shlex.quote(str(beside))} {where}"
    return f"{shlex.quote(sys.executable)} -m tensorboard.main {where}"
