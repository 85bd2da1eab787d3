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
from celebgan.train import train
from celebgan.run.hparams import FINAL_LOSSES, FINAL_QUALITY, experiment, final_metrics, run_hparams, varied_columns
from celebgan.plot import HEIGHT_PER_PANEL, PANELS, TOP, WIDTH, plot_run, read_scalars, step_ticks
from tensorboard.plugins.hparams.metadata import parse_experiment_plugin_data

EPOCHS = TRAINED_EPOCHS
RUN, OTHER = "0_model=vanilla", "1_model=spectral"  # TensorBoard names each run after its folder
OTHER_EPOCHS = 11  # more grids than the 10 TensorBoard keeps of a tag unless told otherwise
# The HParams columns in the order a researcher compares runs; TensorBoard shows the first five.
COLUMNS = ["model", "objective", "penalties", "g_lr", "d_lr", "g_beta1", "d_beta1", "n_dis", "real_label", "data",
           "img_size", "batch_size", "seed"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, trained_run) -> Path:
    """Two runs side by side, as a sweep lays them out: 0_model=vanilla (the session's trained run,
    which most tests read) and 1_model=spectral (11 epochs of one step, to tell the HParams rows
    apart and to have more grids than TensorBoard keeps by default)."""
    root = tmp_path_factory.mktemp("sweep")
    copy_run(trained_run.dir, root / RUN)
    train_under_hydra([*TINY, "model=spectral", f"trainer.max_epochs={OTHER_EPOCHS}", "data.num_images=16", "seed=7",
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


@pytest.mark.integration
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


def test_every_scalar_is_a_curve_on_the_training_step_axis(run):
    scalars = read_scalars(run)
    steps = list(range(1, EPOCHS * 64 // 16 + 1))  # training steps done, as the console counts
    for tag in ["train/d_loss", "train/lr_g", "train/lr_d"]:
        assert [step for step, _ in scalars[tag]] == steps
    assert [value for _, value in scalars["train/lr_g"] + scalars["train/lr_d"]] == pytest.approx([2e-4] * 2 * len(steps))
    for source in FINAL_LOSSES.values():  # the epoch means, after each epoch's 4 training steps
        assert [step for step, _ in scalars[source]] == [4, 8]
    # No single-point final/* chart, no NaN, no Lightning `epoch` counter; metrics are off in the tiny run.
    assert not [tag for tag in scalars if tag == "epoch" or tag.startswith(("final/", "epoch/", "metrics/"))]
    assert not [tag for tag, points in scalars.items() if any(np.isnan(value) for _, value in points)]
    # TensorBoard groups charts by the tag's first part, alphabetically: the per-step curves come first.
    assert sorted({tag.split("/")[0] for tag in scalars}) == ["train", "train_epoch"]


def get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if response.headers.get_content_type() == "application/json" else raw


@pytest.mark.integration
def test_tensorboard_serves_scalars_images_and_hparams(sweep, run):
    # As `make tb` and the end of every run start it: every grid kept (TensorBoard's images=0 would keep none).
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep), "--host", "127.0.0.1", "--port", "0",
         "--load_fast=false", "--reload_interval", "1", "--samples_per_plugin", "images=1000"],
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
            if all(scalars.get(r, {}).keys() >= set(FINAL_LOSSES.values()) for r in (RUN, OTHER)):
                break
            assert time.monotonic() < deadline, f"scalars never served: {scalars}"
            time.sleep(0.5)
        tags = scalars[RUN]
        for name in ["d_loss", "g_loss", "D_x", "D_G_z1", "D_G_z2"]:
            assert f"train/{name}" in tags and f"train_epoch/{name}" in tags  # the README's names
        assert {"train/lr_g", "train/lr_d"} <= tags.keys() and "epoch" not in tags
        assert not [t for t in tags if t.endswith(("_step", "_epoch")) or t.startswith("final/")]
        points = get(f"{base}/data/plugin/scalars/scalars?run={RUN}&tag=train/d_loss")
        assert len(points) == EPOCHS * 64 // 16

        assert list(get(f"{base}/data/plugin/images/tags")[RUN]) == ["train/samples"]
        grids = get(f"{base}/data/plugin/images/images?run={RUN}&tag=train/samples")
        assert [g["step"] for g in grids] == [4, 8]  # after each epoch's 4 training steps, as the curves count
        png = get(f"{base}/data/plugin/images/individualImage?{grids[-1]['query']}")
        assert Image.open(io.BytesIO(png)).size == Image.open(run / "samples" / "epoch_0002.png").size
        grids = get(f"{base}/data/plugin/images/images?run={OTHER}&tag=train/samples")
        assert [g["step"] for g in grids] == list(range(1, OTHER_EPOCHS + 1))  # all 11, one step an epoch

        experiment = get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        # A compact table: the presets and the settings that tell runs apart, not the whole config,
        # in the order TensorBoard shows them; its table and plots show the first five of each.
        assert [h["displayName"] for h in experiment["hparamInfos"]] == COLUMNS
        assert [m["displayName"] for m in experiment["metricInfos"]] == list(FINAL_LOSSES)
        ids = {h["displayName"]: h["name"] for h in experiment["hparamInfos"]}
        groups = get(f"{base}/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
        # One row per run of the sweep, each with its own config values and final metrics.
        rows = {g["sessions"][0]["name"]: g for g in groups["sessionGroups"]}
        assert set(rows) == {RUN, OTHER}
        assert {g["sessions"][0]["status"] for g in groups["sessionGroups"]} == {"STATUS_SUCCESS"}
        assert rows[RUN]["hparams"] == {ids[k]: v for k, v in {
            "model": "vanilla", "objective": "nonsaturating", "penalties": "none", "g_lr": 2e-4, "d_lr": 2e-4,
            "g_beta1": 0.5, "d_beta1": 0.5, "n_dis": 1, "real_label": 1.0, "data": "synthetic", "img_size": 16,
            "batch_size": 16, "seed": 42}.items()}
        assert rows[OTHER]["hparams"][ids["model"]] == "spectral"
        assert rows[OTHER]["hparams"][ids["seed"]] == 7 and rows[OTHER]["hparams"][ids["g_lr"]] == pytest.approx(1e-4)
        for run_name, path in [(RUN, run), (OTHER, sweep / OTHER)]:
            final = {m["name"]["tag"]: (m["value"], m["trainingStep"]) for m in rows[run_name]["metricValues"]}
            on_disk = read_scalars(path)
            assert set(final) == set(FINAL_LOSSES.values())  # the tiny runs measure no FID/KID: no empty columns
            for source in FINAL_LOSSES.values():  # the last epoch's means, at the run's last training step
                assert final[source] == (pytest.approx(on_disk[source][-1][1]), on_disk["train/d_loss"][-1][0])
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_hparams_row_names_objective_penalties_and_presets(make_cfg):
    config = OmegaConf.to_container(make_cfg("model=wgan_gp"), resolve=True)
    row = run_hparams(config, {"model": "wgan_gp", "data": "synthetic"})
    assert list(row) == COLUMNS
    assert (row["model"], row["objective"], row["penalties"], row["n_dis"]) == ("wgan_gp", "wgan", "gp", 5)
    assert (row["g_lr"], row["d_lr"], row["g_beta1"]) == (1e-4, 1e-4, 0.0)
    # Outside Hydra (train() called from Python) the data set still has a name.
    assert run_hparams(config, {})["data"] == "Synthetic" and run_hparams(config, {})["model"] == ""


def test_a_sweeps_varied_columns_come_first_and_every_searched_key_is_a_column(make_cfg):
    config = OmegaConf.to_container(make_cfg("model=r1", "model.penalties.r1.gamma=0.3", "lr_schedule=step"),
                                    resolve=True)
    searched = ["model.g_optimizer.lr", "model.d_optimizer.lr", "model.g_optimizer.betas.0",
                "model.d_optimizer.betas.0", "model.penalties.r1.gamma", "lr_schedule"]
    row = run_hparams(config, {"model": "r1", "data": "synthetic", "lr_schedule": "step"}, searched)
    assert list(row) == [*COLUMNS[:7], "lr_schedule", "model.penalties.r1.gamma", *COLUMNS[7:]]
    assert (row["model.penalties.r1.gamma"], row["lr_schedule"]) == (0.3, "step")
    varied = varied_columns(searched)
    assert varied == ["g_lr", "d_lr", "g_beta1", "d_beta1", "model.penalties.r1.gamma", "lr_schedule"]
    # TensorBoard orders the columns by id, those that differ first, and shows five: swept ones.
    declared = experiment(row, varied, final_metrics({"metrics": {"every_n_epochs": 1}}))
    info = parse_experiment_plugin_data(declared.value[0].metadata.plugin_data.content)
    shown = sorted(info.hparam_infos, key=lambda h: (not h.differs, h.name))[:5]
    assert [h.display_name for h in shown] == ["g_lr", "d_lr", "g_beta1", "d_beta1", "lr_schedule"]
    # Every run gives a column the same id, so rows of different sweeps fill the same columns.
    single = experiment(run_hparams(config, {}), [], {}).value[0].metadata.plugin_data.content
    assert {h.name for h in parse_experiment_plugin_data(single).hparam_infos} < {h.name for h in info.hparam_infos}
    assert [m.display_name for m in info.metric_infos][:2] == list(FINAL_QUALITY)  # FID and KID first
    assert [m.name.tag for m in info.metric_infos][:2] == ["metrics/fid", "metrics/kid"]


def test_learning_rate_curves_follow_the_schedule(make_cfg):
    cfg = make_cfg("trainer.max_epochs=2", "lr_schedule=linear", "model=ttur", "data.num_images=32")
    train(cfg)
    scalars = read_scalars(cfg.paths.output_dir)
    # LinearLR to 0 over the run's four training steps, each step at its rate, D's four times G's (TTUR).
    assert [(s, v) for s, v in scalars["train/lr_g"]] == [(1, pytest.approx(1e-4)), (2, pytest.approx(7.5e-5)),
                                                          (3, pytest.approx(5e-5)), (4, pytest.approx(2.5e-5))]
    assert [v for _, v in scalars["train/lr_d"]] == pytest.approx([4e-4, 3e-4, 2e-4, 1e-4])
