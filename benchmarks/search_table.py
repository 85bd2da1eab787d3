"""The recipe search's table: the best trials of a `search=recipe` study kept in a SQLite file.

A search that keeps its study in a file continues it in the next session (Optuna loads the study
and TPE conditions on every finished trial), and two searches side by side can share it:

    OMP_NUM_THREADS=1 python -m celebgan.train -m search=recipe hydra.sweeper.n_trials=8 \\
        hydra.sweeper.storage=sqlite:///$PWD/benchmarks/recipe_search.db hydra.sweeper.sampler.seed=1
    python benchmarks/search_table.py      # RESULTS.md's section from the study file alone

(Give each session's search its own sampler seed: TPE's first trials are random draws of that seed,
and the same seed would draw the same ones again.) The study file is the search's record and is
committed: a few kilobytes per trial.
"""
import argparse
import datetime
import sys
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Recipe search (search=recipe, benchmarks/search_table.py)"
STUDY = ROOT / "benchmarks" / "recipe_search.db"
STUDY_NAME = "celebgan-recipe"  # conf/search/recipe.yaml's hydra.sweeper.study_name


def finished_trials(path: Path, study_name: str = STUDY_NAME) -> list:
    """The study's complete trials, best (lowest FID) first."""
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{path}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    return sorted(done, key=lambda t: t.value)


def shown(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def table(trials: list, all_trials: int, top: int, path: Path) -> str:
    lines = [SECTION, "",
             f"Table written {datetime.date.today()} from {path.name}: {len(trials)} finished trial(s) of {all_trials}. "
             "Each trial: high_lr at the demo's widths, 32px, 10 epochs of 10,000 synthetic faces (a third of the "
             "demo's images), FID of 1,000 generated vs 1,000 training faces once at the end (metrics=small; "
             "not the presets table's held-out FID: rank trials here, then confirm with benchmarks/quality.py). "
             f"The {min(top, len(trials))} best:", ""]
    if not trials:
        return "\n".join(lines + ["No finished trial yet.", ""])
    keys = sorted({k for t in trials for k in t.params})
    lines += ["| trial | FID | " + " | ".join(keys) + " |", "|---:|---:|" + "---|" * len(keys)]
    for t in trials[:top]:
        lines.append(f"| {t.number} | {t.value:.2f} | " + " | ".join(shown(t.params.get(k, "")) for k in keys) + " |")
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=STUDY)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    if not args.study.is_file():
        parser.error(f"no study at {args.study}: run the search with hydra.sweeper.storage=sqlite:///{args.study}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{args.study}")
    text = table(finished_trials(args.study), len(study.trials), args.top, args.study)
    print(text)
    write_section(args.results, text)
    print(f"Wrote {args.results}")


if __name__ == "__main__":
    main()
