"""A --multirun sweep ends with a table of all its jobs (run.sweep), and one that fails before
its first job leaves no folder."""
import subprocess

import pytest
from conftest import cli_cmd, cli_env

from celebgan.run.sweep import job_rows, table, write_job_summary


def sweep_cmd(*overrides: str) -> list[str]:
    cmd = cli_cmd(*overrides)
    cmd.insert(3, "-m")  # python -m celebgan.train -m ...
    return cmd


@pytest.mark.integration
def test_a_sweep_ends_with_a_table_of_every_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(sweep_cmd("model=vanilla,high_lr", f"hydra.sweep.dir={sweep}"), env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = (sweep / "summary.md").read_text()
    rows = [line for line in written.splitlines() if line.startswith("| ")]
    assert rows[0] == "| job | overrides | d_loss | g_loss | folder |"  # no FID column: nothing measured it
    assert [row.split(" | ")[:2] for row in rows[1:]] == [["| 0", "model=vanilla"], ["| 1", "model=high_lr"]]
    assert rows[1].endswith(f" | {sweep / '0_model=vanilla'} |") and rows[2].endswith(f" | {sweep / '1_model=high_lr'} |")
    assert f"--logdir {sweep} --samples_per_plugin images=1000\n" in written
    assert written in result.stdout  # printed as the sweep's last words
    assert result.stdout.rstrip().endswith(f"Written to {sweep / 'summary.md'}")


@pytest.mark.integration
def test_a_sweep_that_fails_before_its_first_job_leaves_no_folder(tmp_path):
    sweep = tmp_path / "multirun" / "sweep"
    result = subprocess.run(sweep_cmd("model=vanilla,no_such_model", f"hydra.sweep.dir={sweep}"), env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "no_such_model" in result.stderr
    assert not sweep.exists() and (tmp_path / "multirun").is_dir()  # only the folder the sweep made goes


def test_the_table_shows_measured_columns_and_failed_jobs(tmp_path):
    for num, name, metrics in [(0, "model=vanilla", {"train_epoch/d_loss": 1.25, "train_epoch/g_loss": 0.5, "metrics/fid": 123.456}),
                               (1, "model=high_lr", {"train_epoch/d_loss": 1.0, "train_epoch/g_loss": 0.75}),
                               (2, "model=hinge", None), (10, "model=r1", {"train_epoch/d_loss": 2.0, "train_epoch/g_loss": 1.0})]:
        job = tmp_path / f"{num}_{name}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- {name}\n- trainer.max_epochs=1\n")
        if metrics is not None:
            write_job_summary(job, name, metrics)
    (tmp_path / "cache").mkdir()  # a folder of the sweep that is no job
    assert table(job_rows(tmp_path)).splitlines() == [
        "| job | overrides | d_loss | g_loss | FID | folder |",
        "|---|---|---|---|---|---|",
        f"| 0 | model=vanilla | 1.250 | 0.500 | 123.5 | {tmp_path / '0_model=vanilla'} |",
        f"| 1 | model=high_lr | 1.000 | 0.750 | - | {tmp_path / '1_model=high_lr'} |",
        f"| 2 | model=hinge | failed | failed | failed | {tmp_path / '2_model=hinge'} |",
        f"| 10 | model=r1 | 2.000 | 1.000 | - | {tmp_path / '10_model=r1'} |",
    ]
