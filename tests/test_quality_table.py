"""benchmarks/quality.py's table: every row from per-run records, the whole section generated (the
machines paragraph from the records' provenance), a cached rebuild said to be one."""
from types import SimpleNamespace

from test_atomic import load_script

quality = load_script("quality")

PUBLISHED = f"""# Benchmark results

{quality.SECTION}

2026-11-23, vm (2 CPUs, x86_64, no GPU), torch 2.14.1, 0 min in all.

Machines: a hand-written paragraph about where the rows were trained.

| model | train (min) | FID | KID x 1000 | FID / real-vs-real |
|---|---:|---:|---:|---:|
| real vs real (valid split) | - | 13.88 | -0.01 | 1.0x |
| vanilla \u2020 | 3.4 | 64.40 +- 2.15 | 51.49 +- 2.33 | 4.6x |

## Training dynamics (benchmarks/diagnose.py)

| model | a | b | c | d |
|---|---:|---:|---:|---:|
| vanilla | 1 | 2.0 | 3 | 4 |
"""

FAST = {"date": "2026-11-23", "commit": "746c489", "host": "vm", "cpus": 2, "gpu": None}  # an old record: no capability
SLOW = {"date": "2026-11-30", "commit": "4211fab", "host": "vm", "cpus": 2, "cpu_capability": "AVX2", "gpu": None}


def record(fid: float, seed: int | None, where: dict, minutes: float = 4.0) -> dict:
    return {"fid": fid, "kid": fid / 1000, "minutes": minutes, "seed": seed} | where


def args_for(results, variants, override=()):
    return SimpleNamespace(n_eval=1000, seeds=3, img_size=32, override=list(override), quick=False, write=False,
                           results=results, variants=variants)


def rows_of(variants: dict[str, list[dict]], anchor_where: dict) -> list[dict]:
    rows = [quality.summarise("real vs real (valid split)", "-", [record(14.0, None, anchor_where)])]
    for variant, results in variants.items():
        row = quality.variant_row(variant, results, [r["minutes"] for r in results], 3)
        rows += [row] if row else []
    return sorted(rows, key=lambda r: (1 if r.get("variant") else 0, r["fid"][0] if r.get("variant") else 0))


def test_a_cached_rebuild_generates_the_whole_section_from_records(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(PUBLISHED)
    rows = rows_of({"rpgan": [record(f, s, SLOW) for s, f in enumerate((40.0, 44.0, 42.0))],
                    "vanilla": []}, SLOW)
    quality.write_table(args_for(results, ["rpgan", "vanilla"]), rows, (10000, 30, 32), 1000, "features", 3.0, 0)
    text = results.read_text()
    section = text.split("## Training dynamics")[0]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| real vs real (valid split)", "| rpgan"]
    assert table[2].startswith("| rpgan | 4.0 | 42.00 +- 2.00 | 42.00 +- 2.00 | 3.0x |")
    assert "Not run yet: vanilla." in section  # no row without records, and no carried-over row
    assert "rebuilt from 4 records, no training" in section and "min in all" not in section
    # Nothing of the old section survives: its hand-written paragraph and its carried rows are gone.
    assert "hand-written" not in section and "\u2020" not in section and "64.40" not in section
    assert ("Machines (from the records): real vs real (valid split), rpgan: 2026-11-30 at commit 4211fab on vm "
            "(2 CPUs, CPU capability AVX2, no GPU).") in section
    assert "| vanilla | 1 | 2.0 | 3 | 4 |" in text  # the other section is untouched

    # Rebuilt again from the same records: the same section, word for word.
    quality.write_table(args_for(results, ["rpgan", "vanilla"]), rows, (10000, 30, 32), 1000, "features", 3.0, 0)
    assert results.read_text() == text


def test_the_machines_paragraph_groups_rows_by_where_and_when_they_were_trained():
    rows = rows_of({"high_lr": [record(f, s, FAST) for s, f in enumerate((41.0, 42.0, 43.0))],
                    "spectral": [record(80.0, 0, FAST), record(82.0, 1, SLOW)],
                    "regularized": [record(112.0, s, SLOW) for s in range(3)]}, SLOW)
    text = quality.machines(rows)
    fast = ("high_lr, spectral (2 of 3 seeds) (seed 0): 2026-11-23 at commit 746c489 on vm "
            "(2 CPUs, CPU capability not recorded, no GPU).")
    slow = ("real vs real (valid split), spectral (2 of 3 seeds) (seed 1), regularized: 2026-11-30 at commit "
            "4211fab on vm (2 CPUs, CPU capability AVX2, no GPU).")
    assert fast in text and slow in text
    # Another commit on the same machine is another group.
    later = quality.machines(rows_of({"high_lr": [record(41.0, 0, SLOW | {"commit": "abc1234"})]}, SLOW))
    assert "high_lr (1 of 3 seeds): 2026-11-30 at commit abc1234" in later and "real vs real (valid split): 2026-11-30 at commit 4211fab" in later
    # One host name on another processor is another machine, and the paragraph names the processor.
    moved = quality.machines(rows_of({"high_lr": [record(41.0, 0, SLOW | {"cpu_model": "AMD EPYC 9B14"})]}, SLOW))
    assert "high_lr (1 of 3 seeds): 2026-11-30 at commit 4211fab on vm (2 CPUs, AMD EPYC 9B14, CPU capability AVX2" in moved
    assert "real vs real (valid split): 2026-11-30 at commit 4211fab on vm (2 CPUs, CPU capability AVX2" in moved


def test_the_processor_is_read_from_the_os():
    model = quality.cpu_model()
    assert isinstance(model, str) and model.strip() == model and "  " not in model and "model name" not in model


def test_a_run_that_trained_says_its_time_and_what_came_from_records(tmp_path):
    results = tmp_path / "RESULTS.md"
    rows = rows_of({"rpgan": [record(40.0, 0, SLOW), record(44.0, 1, SLOW)]}, SLOW)
    quality.write_table(args_for(results, ["rpgan"]), rows, (10000, 30, 32), 1000, "features", 600.0, 1)
    text = results.read_text()
    assert "1 run(s) trained or measured and 2 read from records, 10 min in all." in text
    assert "| rpgan (2 of 3 seeds) | 4.0 | 42.00 +- 2.83 |" in text


def test_a_preset_row_needs_records():
    assert quality.variant_row("rpgan", [], [], 3) is None
    one = [record(70.0, 0, SLOW)]
    assert quality.variant_row("rpgan", one, [4.0], 3)["name"] == "rpgan (1 of 3 seeds)"
    assert quality.variant_row("rpgan", one * 3, [1.0, 2.0, 3.0], 3)["name"] == "rpgan"
    assert not hasattr(quality, "previous_rows")  # rows are never read back from the published table


def test_a_probe_with_overrides_writes_its_own_section_and_leaves_the_presets_table(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(PUBLISHED)
    rows = rows_of({"high_lr": [record(f, s, SLOW) for s, f in enumerate((33.0, 33.4, 31.8))]}, SLOW)
    wide = ["model.discriminator.ndf=64", "model.d_optimizer.lr=2e-3"]
    quality.write_table(args_for(results, ["high_lr"], wide), rows, (10000, 30, 32), 1000, "features", 3.0, 0)
    text = results.read_text()
    assert "| vanilla \u2020 | 3.4 | 64.40 +- 2.15 |" in text  # the presets' table is untouched
    heading = f"{quality.SECTION}: model.d_optimizer.lr=2e-3 model.discriminator.ndf=64"
    assert text.count(heading + "\n") == 1 and "| high_lr | 4.0 | 32.73 +- 0.83 |" in text.split(heading)[1]
    # The same probe again replaces its own section; the overrides' order does not matter.
    quality.write_table(args_for(results, ["high_lr"], wide[::-1]), rows, (10000, 30, 32), 1000, "features", 3.0, 0)
    again = results.read_text()
    assert again.count(heading + "\n") == 1 and again.count("| high_lr | 4.0 |") == 1
    assert "| vanilla \u2020 | 3.4 | 64.40 +- 2.15 |" in again


def test_another_image_size_or_budget_writes_its_own_section(tmp_path):
    # The 64px block (--img-size 64 --epochs 15) leaves the demo-budget presets' table as it is.
    results = tmp_path / "RESULTS.md"
    results.write_text(PUBLISHED)
    rows = rows_of({"vanilla": [record(f, s, SLOW) for s, f in enumerate((90.0, 92.0, 94.0))]}, SLOW)
    block = args_for(results, ["vanilla"])
    block.img_size, block.epochs = 64, 15
    quality.write_table(block, rows, (10000, 15, 32), 1000, "features", 3.0, 0)
    text = results.read_text()
    assert "| vanilla \u2020 | 3.4 | 64.40 +- 2.15 |" in text  # the presets' table is untouched
    heading = f"{quality.SECTION}: 64px, 15 epochs"
    assert text.count(heading + "\n") == 1 and "| vanilla | 4.0 | 92.00 +- 2.00 |" in text.split(heading)[1]
    assert quality.section_heading(args_for(results, ["vanilla"])) == quality.SECTION
    demo_budget = args_for(results, ["vanilla"])  # the demo's own budget, named: the presets' section
    demo_budget.num_images, demo_budget.epochs, demo_budget.batch_size = 10000, 30, 32
    assert quality.section_heading(demo_budget) == quality.SECTION
