"""What a run shows afterwards: the training-curve PNG, and TensorBoard serving its scalars,
sample grids and HParams row over HTTP (on loopback, from a tiny run trained once for the module)."""
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
import torch
from conftest import TINY, compose_config
from PIL import Image

from celebgan.errors import UserError
from celebgan.hparams import FINAL_METRICS
from celebgan.plot import HEIGHT_PER_PANEL, PANELS, WIDTH, plot_run, read_scalars
from celebgan.train import train

EPOCHS = 2
RUN, OTHER = "0_model=spectral/tensorboard", "1_model=vanilla/tensorboard"  # TensorBoard's run names


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Two runs side by side, as a sweep lays them out: 0_model=spectral (the one most tests read)
    and 1_model=vanilla (one epoch, to tell the HParams rows apart)."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("sweep")
    for name, overrides in [("0_model=spectral", ["model=spectral", f"trainer.max_epochs={EPOCHS}"]),
                            ("1_model=vanilla", ["trainer.max_epochs=1", "data.num_images=32"])]:
        train(compose_config([*TINY, *overrides], root / name))
    return root


@pytest.fixture(scope="module")
def run(sweep) -> Path:
    return sweep / "0_model=spectral"


def test_plot_draws_every_curve_of_the_run(run, tmp_path):
    out = plot_run(run, tmp_path / "curves.png")
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (HEIGHT_PER_PANEL * len(PANELS), WIDTH, 3)
    for _, _, series in PANELS:
        for _, _, colour in series:
            # Each curve's colour covers more pixels than its legend swatch alone would.
            assert (img == colour).all(axis=2).sum() > 100, colour
    steps = [s for s, _ in read_scalars(run)["train/d_loss_step"]]
    assert len(steps) == EPOCHS * 64 // 16
    assert plot_run(run) == run / "training_curves.png"


def test_plot_errors(tmp_path):
    with pytest.raises(UserError, match="No TensorBoard event files"):
        plot_run(tmp_path)
    result = subprocess.run([sys.executable, "-m", "celebgan.plot", f"run={tmp_path}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "No TensorBoard event files" in result.stderr


def test_final_metrics_fill_the_hparams_columns(run):
    scalars = read_scalars(run)
    filled = [name for name, source in FINAL_METRICS.items() if source in scalars]
    assert {n for n in filled if n.startswith("final/D") or n.endswith("_loss")} == {
        n for n in FINAL_METRICS if not n.endswith(("fid", "kid"))}  # the tiny run has metrics off
    for name in filled:
        source = FINAL_METRICS[name]
        last = scalars[name][-1][1]
        assert last == pytest.approx(scalars[source][-1][1])
        assert not np.isnan(last)


def get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if response.headers.get_content_type() == "application/json" else raw


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
            if all(scalars.get(r, {}).keys() >= set(FINAL_METRICS) for r in (RUN, OTHER)):
                break
            assert time.monotonic() < deadline, f"scalars never served: {scalars}"
            time.sleep(0.5)
        tags = scalars[RUN]
        for name in ["d_loss", "g_loss", "D_x", "D_G_z1", "D_G_z2"]:
            assert f"train/{name}_step" in tags and f"train/{name}_epoch" in tags
        points = get(f"{base}/data/plugin/scalars/scalars?run={RUN}&tag=train/d_loss_step")
        assert len(points) == EPOCHS * 64 // 16

        assert "samples" in get(f"{base}/data/plugin/images/tags")[RUN]
        grids = get(f"{base}/data/plugin/images/images?run={RUN}&tag=samples")
        assert [g["step"] for g in grids] == list(range(EPOCHS))
        png = get(f"{base}/data/plugin/images/individualImage?{grids[-1]['query']}")
        assert Image.open(io.BytesIO(png)).size == Image.open(run / "samples" / "epoch_0001.png").size

        experiment = get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        hparams = {h["name"] for h in experiment["hparamInfos"]}
        assert {"model/discriminator/spectral_norm", "data/img_size", "model/g_optimizer/lr"} <= hparams
        assert {m["name"]["tag"] for m in experiment["metricInfos"]} == set(FINAL_METRICS)
        groups = get(f"{base}/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
        # One row per run of the sweep, each with its own config values and final metrics.
        rows = {g["sessions"][0]["name"]: g for g in groups["sessionGroups"]}
        assert set(rows) == {RUN, OTHER}
        assert rows[RUN]["hparams"]["model/discriminator/spectral_norm"] == 1  # bools arrive as 1.0 / 0.0
        assert rows[OTHER]["hparams"]["model/discriminator/spectral_norm"] == 0
        assert rows[RUN]["hparams"]["data/num_images"] == 64 and rows[OTHER]["hparams"]["data/num_images"] == 32
        for run_name, path in [(RUN, run), (OTHER, sweep / "1_model=vanilla")]:
            final = {m["name"]["tag"]: m["value"] for m in rows[run_name]["metricValues"]}
            on_disk = read_scalars(path)
            sources = {name: source for name, source in FINAL_METRICS.items() if source in on_disk}
            assert len(sources) == 5  # the tiny runs log no FID/KID
            for name, source in sources.items():
                assert final[name] == pytest.approx(on_disk[source][-1][1])
    finally:
        proc.kill()
        proc.wait(timeout=30)
