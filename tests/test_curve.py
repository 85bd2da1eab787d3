"""benchmarks/curve.py: FID against images, the points a run is measured at, where one preset
overtakes another, and a run that keeps its snapshots, resumes, and is not trained twice."""
import torch
from conftest import TINY, compose_config
from test_atomic import load_script

curve = load_script("curve")


def test_the_points_are_every_n_epochs_and_the_last():
    assert curve.points_of(90, 15) == [15, 30, 45, 60, 75, 90]
    assert curve.points_of(10, 4) == [4, 8, 10]


def test_a_preset_overtakes_from_the_point_it_stays_below():
    first = [(100, 80.0, None), (200, 60.0, None), (300, 50.0, None), (400, 45.0, None)]
    later = [(100, 90.0, None), (200, 58.0, None), (300, 52.0, None), (400, 40.0, None)]
    assert curve.overtakes(first, later) == 400  # below at 200 kimg, above again at 300: from 400 on
    assert curve.overtakes(first, [(k, f + 1, None) for k, f, _ in first]) is None
    assert curve.overtakes(first, [(k, f - 1, None) for k, f, _ in first]) == 100


def test_another_set_of_presets_gets_its_own_results_section(tmp_path):
    from argparse import Namespace

    args = Namespace(img_size=32, num_images=10000, batch_size=32, every=15, n_eval=1000,
                     runs_dir=tmp_path / "runs", plot=tmp_path / "fid_curve.png")
    run = {"seed": 0, "curve": [{"epochs": 15, "kimg": 150.0, "fid": 90.0}, {"epochs": 30, "kimg": 300.0, "fid": 60.0}]}
    results = tmp_path / "RESULTS.md"
    for variants, epochs in ((["vanilla", "spectral"], 90), (["high_lr"], 60), (["vanilla", "spectral"], 90)):
        args.variants, args.epochs = variants, epochs
        curve.write_section(results, curve.write_table(args, {v: [run] for v in variants}, 13.9, "features"))
    headings = [line for line in results.read_text().splitlines() if line.startswith("## ")]
    assert headings == [curve.SECTION, f"{curve.SECTION}: high_lr, 60 epochs"]


def test_a_run_keeps_a_snapshot_per_point_resumes_and_trains_once(tmp_path):
    run = tmp_path / "run"

    def cfg(epochs: int):
        return curve.with_snapshots(compose_config([*TINY, f"trainer.max_epochs={epochs}"], run), 2)

    calls = []

    def measure(gan):  # a stand-in for FID: the EMA generator's weights, which training moves
        calls.append(gan)
        return {"fid": float(sum(p.double().sum() for p in gan.generator_ema.parameters()))}

    lines = []
    curve.run_curve(cfg(2), [2], measure, log=lines.append)  # stopped after 2 epochs
    assert curve.trained_epochs(run) == 2
    points = curve.run_curve(cfg(4), [2, 4], measure, log=lines.append)  # resumed to 4
    assert any("resuming run after epoch 2" in line for line in lines)
    assert [p["epochs"] for p in points] == [2, 4] and [p["kimg"] for p in points] == [0.128, 0.256]
    assert points[0]["fid"] != points[1]["fid"]
    stamp = curve.snapshot(run, 4).stat().st_mtime_ns
    measured = len(calls)
    again = curve.run_curve(cfg(4), [2, 4], measure, log=lines.append)  # finished: neither trained nor measured
    assert again == points and curve.snapshot(run, 4).stat().st_mtime_ns == stamp and len(calls) == measured
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3
    # Resumed to 5 epochs, which 2 does not divide: the last point is the run's end, its last.ckpt.
    longer = curve.run_curve(cfg(5), [2, 4, 5], measure, log=lines.append)
    assert longer[:2] == points and longer[2]["epochs"] == 5 and longer[2]["fid"] != points[1]["fid"]
    assert len(calls) == measured + 1 and longer[2]["kimg"] == 0.32  # only the new point, at 5 x 64 images
