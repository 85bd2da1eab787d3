"""benchmarks/conditional.py's plumbing: a --quick run of both conditional presets."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import TESTS_DIR, cli_env
from PIL import Image
from test_atomic import load_script

from celebgan.metrics.judge import Judge
from celebgan.metrics.registry import calc_metrics
from celebgan.run.checkpoint import load_gan, real_subset


@pytest.mark.integration  # a process that trains both conditional presets (tiny): about 20 s on 2 cores
def test_the_conditional_benchmark_keeps_records_checkpoints_grid_and_its_results_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other\n\nkept\n")
    env = cli_env() | {"CELEBGAN_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, str(TESTS_DIR.parent / "benchmarks" / "conditional.py"), "--quick", "--write",
         "--runs-dir", str(tmp_path / "records"), "--out-dir", str(tmp_path / "runs"),
         "--grid", str(tmp_path / "toggle.png"), "--results", str(results)],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = sorted(p.name.split("_seed")[0] for p in (tmp_path / "records").glob("*.json"))
    assert records == ["acgan", "projection"]
    for preset in records:  # the checkpoint stays, so obedience can be measured again
        assert (tmp_path / "runs" / f"{preset}_seed0" / "checkpoints" / "last.ckpt").is_file()
    assert Image.open(tmp_path / "toggle.png").size[0] == 2 + 8 * 66  # 4 faces, each off and on, 16px drawn at 64px
    text = results.read_text()
    assert "## Other\n\nkept" in text and "## Attribute-conditional generation" in text
    for line in ["| judge on held-out real faces (the ceiling) |", "| Smiling |", "| Blond_Hair, no Smiling |",
                 "| obedience (consistent) | obedience (independent) | judge's ceiling |"]:
        assert line in text, line
    record = json.loads(next((tmp_path / "records").glob("projection_*.json")).read_text())
    assert list(record["obedience"]["per_attribute"]) == list(record["ceiling"]["per_attribute"])
    assert list(record["obedience_independent"]["per_attribute"]) == list(record["ceiling"]["per_attribute"])
    assert len(record["obedience"]["per_attribute"]) == 8 and len(record["per_condition"]) == 3
    # Obedience is the Judge's, the one celebgan-evaluate and training use (metrics.registry's
    # "obedience"): measured again on the kept checkpoint, it gives the record's numbers.
    gan, config = load_gan(tmp_path / "runs" / "projection_seed0" / "checkpoints" / "last.ckpt")
    judge = Judge(data_config=config["data"], cache_dir=tmp_path / "cache", classifier=load_script("conditional")
                  .QUICK_CLASSIFIER, n=8, n_ceiling=64, seed=1, read=real_subset)
    again = calc_metrics(["obedience"], real=torch.zeros(1, 1), gan=gan, judge=judge)["obedience"]
    assert again["per_attribute"] == record["obedience"]["per_attribute"]
    assert again["independent"] == record["obedience_independent"] and again["ceiling"] == record["ceiling"]
