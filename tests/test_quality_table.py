"""benchmarks/quality.py's table: rows from per-run records, and published rows carried over until rerun."""
from types import SimpleNamespace

from test_atomic import load_script

quality = load_script("quality")

PUBLISHED = f"""# Benchmark results

{quality.SECTION}

2026-11-23, vm (2 CPUs, x86_64, no GPU), torch 2.14.1, 5 min in all.

| model | train (min) | FID | KID x 1000 | FID / real-vs-real |
|---|---:|---:|---:|---:|
| real vs real (valid split) | - | 13.88 | -0.01 | 1.0x |
| untrained generator | 0 | 402.12 | 534.25 | 29.0x |
| vanilla | 3.4 | 64.40 +- 2.15 | 51.49 +- 2.33 | 4.6x |
| spectral (2 of 3 seeds) | 4.6 | 79.87 +- 6.16 | 67.51 +- 6.12 | 5.8x |
| minimax (1 of 3 seeds) | 4.3 | 374.83 | 493.36 | 27.0x |

## Training dynamics (benchmarks/diagnose.py)

| model | a | b | c | d |
|---|---:|---:|---:|---:|
| vanilla | 1 | 2.0 | 3 | 4 |
"""


def args_for(results, variants):
    return SimpleNamespace(n_eval=1000, seeds=3, img_size=32, override=[], quick=False, write=False,
                           results=results, variants=variants)


def test_previous_rows_reads_variant_rows_of_its_own_section_only(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(PUBLISHED)
    rows = quality.previous_rows(results)
    assert sorted(rows) == ["minimax", "spectral", "vanilla"]  # no anchors, nothing from other sections
    assert rows["vanilla"]["fid"] == (64.40, 2.15) and rows["vanilla"]["kid"] == (51.49, 2.33)
    assert rows["spectral"]["name"] == "spectral (2 of 3 seeds)"
    assert rows["minimax"]["fid"] == (374.83, None)
    assert (rows["vanilla"]["seeds"], rows["spectral"]["seeds"], rows["minimax"]["seeds"]) == (3, 2, 1)
    assert all(r["since"] == "2026-11-23" and r["carried"] for r in rows.values())
    assert quality.previous_rows(tmp_path / "missing.md") == {}


def test_recorded_runs_replace_carried_rows_and_the_carry_keeps_its_date(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(PUBLISHED)
    carried = quality.previous_rows(results)
    records = [{"fid": 40.0, "kid": 0.030}, {"fid": 44.0, "kid": 0.034}, {"fid": 42.0, "kid": 0.032}]
    rows = [quality.summarise("real vs real (valid split)", "-", [{"fid": 14.0, "kid": 0.0}]),
            carried["vanilla"] | {"variant": True},
            quality.summarise("spectral", "4.0", records) | {"variant": True}]
    rows.sort(key=lambda r: (1 if r.get("variant") else 0, r["fid"][0] if r.get("variant") else 0))
    quality.write_table(args_for(results, ["vanilla", "spectral", "minimax"]), rows, (10000, 30, 32), 1000,
                        "features", 60.0)
    text = results.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[2].startswith("| spectral | 4.0 | 42.00 +- 2.00 | 32.00 +- 2.00 | 3.0x |")
    assert table[3].startswith(f"| vanilla {quality.CARRIED} | 3.4 | 64.40 +- 2.15 | 51.49 +- 2.33 | 4.6x |")
    assert f"{quality.CARRIED} Carried over from the table of 2026-11-23: no per-run records of vanilla" in text
    assert "Not run yet: minimax." in text
    assert "Best: **spectral**, FID 42.00, against 64.40 for vanilla" in text
    assert "| vanilla | 1 | 2.0 | 3 | 4 |" in text  # the other section is untouched

    # Carried again by a later table: still dated by the run that measured it, not by that table.
    again = quality.previous_rows(results)
    assert again["vanilla"]["since"] == "2026-11-23" and again["vanilla"]["fid"] == (64.40, 2.15)
    assert "spectral" in again and again["spectral"]["fid"] == (42.0, 2.0)


def test_records_replace_a_published_row_once_they_have_as_many_seeds(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(PUBLISHED)
    carried = quality.previous_rows(results)
    one = [{"fid": 70.0, "kid": 0.06}]
    assert quality.variant_row("spectral", one, [4.0], 3, carried)["name"] == "spectral (2 of 3 seeds)"  # 2 > 1
    row = quality.variant_row("spectral", one * 2, [4.0, 5.0], 3, carried)
    assert row["name"] == "spectral (2 of 3 seeds)" and not row["carried"] and row["fid"] == (70.0, 0.0)
    assert quality.variant_row("minimax", one, [3.0], 3, carried)["carried"] is False
    assert quality.variant_row("vanilla", [], [], 3, carried)["fid"] == (64.40, 2.15)
    assert quality.variant_row("rpgan", [], [], 3, carried) is None
    assert quality.variant_row("rpgan", one * 3, [1.0, 2.0, 3.0], 3, carried)["name"] == "rpgan"
