"""What a run shows afterwards: the training-curve PNG, and TensorBoard serving its scalars,
sample grids and HParams row over HTTP (on loopback, from the session's trained run)."""
import io
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, TRAINED_EPOCHS, copy_run, train_under_hydra
from omegaconf import OmegaConf
from PIL import Image

from celebgan.errors import UserError
from celebgan.run.hparams import FINAL_LOSSES, run_hparams
from celebgan.plot import HEIGHT_PER_PANEL, PANELS, TOP, WIDTH, plot_run, read_scalars, step_ticks

EPOCHS = TRAINED_EPOCHS
RUN, OTHER = "0_model=vanilla", "1_model=spectral"  # TensorBoard names each run after its folder


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, trained_run) -> Path:
    """Two runs side by side, as a sweep lays them out: 0_model=vanilla (the session's trained run,
    which most tests read) and 1_model=spectral (one epoch, to tell the HParams rows apart)."""
    root = tmp_path_factory.mktemp("sweep")
    copy_run(trained_run.dir, root / RUN)
    train_under_hydra([*TINY, "model=spectral", "trainer.max_epochs=1", "data.num_images=32", "seed=7",
                       "model.g_optimizer.lr=1e-4"], root / OTHER)
    return root


@pytest.fixture(scope="module")
def run(sweep) -> Path:
    return sweep / RUN


def test_plot_draws_every_curve_of_the_run(run, tmp_path):
    out = plot_run(run, tmp_path / "curves.png")
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (HEIGHT_PER_PANEL * len(PANELS), WIDTH, 3)
    for i, (_, _, series) in enumerate(PANELS):
        for _, _, colour in series:
            # Each curve's colour covers more pixels than its legend swatch alone would.
            assert (img == colour).all(axis=2).sum() > 100, colour
            # The legend sits on the title line, above the frame (TOP): it covers no curve.
            title_band = img[i * HEIGHT_PER_PANEL:i * HEIGHT_PER_PANEL + TOP]
            assert (title_band == colour).all(axis=2).any(), colour
    steps = [s for s, _ in read_scalars(run)["train/d_loss"]]
    assert len(steps) == EPOCHS * 64 // 16
    assert plot_run(run) == run / "training_curves.png"


@pytest.mark.integration
def test_plot_errors(tmp_path):
    with pytest.raises(UserError, match="No TensorBoard event files"):
        plot_run(tmp_path)
    result = subprocess.run([sys.executable, "-m", "celebgan.plot", f"run={tmp_path}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "No TensorBoard event files" in result.stderr


@pytest.mark.integration
def test_plot_marks_round_steps():
    assert step_ticks(7019) == [0, 2000, 4000, 6000]  # not 1755, 3510, 5264
    assert step_ticks(25320) == [0, 5000, 10000, 15000, 20000, 25000]
    assert step_ticks(7) == [0, 2, 4, 6] and step_ticks(0) == [0]


def test_plot_command_line_prints_one_line_and_has_help(run, tmp_path):
    out = tmp_path / "curves.png"
    # The sweep's job folder is named 0_model=spectral: a value that holds "=" goes in quotes.
    result = subprocess.run([sys.executable, "-m", "celebgan.plot", f"run='{run}'", f"out={out}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and (result.stdout + result.stderr).strip() == f"Wrote {out}"  # no TensorBoard INFO
    result = subprocess.run([sys.executable, "-m", "celebgan.plot", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "run=RUN_DIR" in result.stdout
    assert all(key in result.stdout for key in ("run: ???", "out: null", "smoothing: 0.9"))  # its keys


def test_final_metrics_fill_the_hparams_columns_at_the_last_step(run):
    scalars = read_scalars(run)
    last_step = EPOCHS * 64 // 16 - 1
    assert scalars["train/d_loss"][-1][0] == last_step
    for name, source in FINAL_LOSSES.items():
        step, last = scalars[name][-1]
        assert last == pytest.approx(scalars[source][-1][1]) and not np.isnan(last)
        assert step == last_step  # on the training-step axis of the curves, not Lightning's global_step
    # Metrics are off in the tiny run: no FID/KID columns, which could only ever hold NaN.
    assert not [tag for tag in scalars if tag.startswith(("final/fid", "final/kid", "metrics/"))]


def get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if response.headers.get_content_type() == "application/json" else raw


@pytest.mark.integration
def test_tensorboard_serves_scalars_images_and_hparams(sweep, run):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep), "--host", "127.0.0.1", "--port", "0",
         "--load_fast=false", "--reload_interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = None
        deadline = time.monotonic() + 90
        while base is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"TensorBoard exited with status {proc.returncode}")
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            base = found.group(1) if found else None
        assert base, "TensorBoard did not report its address"
        # The first load of the logs is asynchronous: poll until the run's tags appear.
        while True:
            scalars = get(f"{base}/data/plugin/scalars/tags")
            if all(scalars.get(r, {}).keys() >= set(FINAL_LOSSES) for r in (RUN, OTHER)):
                break
            assert time.monotonic() < deadline, f"scalars never served: {scalars}"
            time.sleep(0.5)
        tags = scalars[RUN]
        for name in ["d_loss", "g_loss", "D_x", "D_G_z1", "D_G_z2"]:
            assert f"train/{name}" in tags and f"epoch/{name}" in tags  # the README's names
        assert not [t for t in tags if t.endswith(("_step", "_epoch"))]
        points = get(f"{base}/data/plugin/scalars/scalars?run={RUN}&tag=train/d_loss")
        assert len(points) == EPOCHS * 64 // 16

        assert "samples" in get(f"{base}/data/plugin/images/tags")[RUN]
        grids = get(f"{base}/data/plugin/images/images?run={RUN}&tag=samples")
        assert [g["step"] for g in grids] == list(range(EPOCHS))
        png = get(f"{base}/data/plugin/images/individualImage?{grids[-1]['query']}")
        assert Image.open(io.BytesIO(png)).size == Image.open(run / "samples" / "epoch_0001.png").size

        experiment = get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        # A compact table: the presets and the settings that tell runs apart, not the whole config.
        hparams = {h["name"] for h in experiment["hparamInfos"]}
        assert hparams == {"model", "data", "objective", "real_label", "penalties", "n_dis", "g_lr", "d_lr",
                           "img_size", "batch_size", "seed"}
        assert {m["name"]["tag"] for m in experiment["metricInfos"]} == set(FINAL_LOSSES)
        groups = get(f"{base}/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
        # One row per run of the sweep, each with its own config values and final metrics.
        rows = {g["sessions"][0]["name"]: g for g in groups["sessionGroups"]}
        assert set(rows) == {RUN, OTHER}
        assert rows[RUN]["hparams"] == {"model": "vanilla", "data": "synthetic", "objective": "nonsaturating",
                                        "real_label": 1.0, "penalties": "none", "n_dis": 1, "g_lr": 2e-4,
                                        "d_lr": 2e-4, "img_size": 16, "batch_size": 16, "seed": 42}
        assert rows[OTHER]["hparams"]["model"] == "spectral"
        assert rows[OTHER]["hparams"]["seed"] == 7 and rows[OTHER]["hparams"]["g_lr"] == pytest.approx(1e-4)
        for run_name, path in [(RUN, run), (OTHER, sweep / OTHER)]:
            final = {m["name"]["tag"]: m["value"] for m in rows[run_name]["metricValues"]}
            on_disk = read_scalars(path)
            assert set(final) == set(FINAL_LOSSES)  # the tiny runs measure no FID/KID: no NaN columns
            for name, source in FINAL_LOSSES.items():
                assert final[name] == pytest.approx(on_disk[source][-1][1])
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_hparams_row_names_objective_penalties_and_presets(make_cfg):
    config = OmegaConf.to_container(make_cfg("model=wgan_gp"), resolve=True)
    row = run_hparams(config, {"model": "wgan_gp", "data": "synthetic"})
    assert (row["model"], row["objective"], row["penalties"], row["n_dis"]) == ("wgan_gp", "wgan", "gp", 5)
    assert (row["g_lr"], row["d_lr"]) == (1e-4, 1e-4)
    # Outside Hydra (train() called from Python) the data set still has a name.
    assert run_hparams(config, {})["data"] == "Synthetic" and run_hparams(config, {})["model"] == ""
