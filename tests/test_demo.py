"""`make demo`: what experiment=demo composes, and the target itself run end to end, shrunk."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import cli_env, compose_config
from omegaconf import OmegaConf
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def demo_overrides() -> list[str]:
    """The overrides the Makefile's demo recipe passes to celebgan.train (before $(ARGS))."""
    recipe = re.search(r"^demo:.*\n\t(.+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    command = recipe.split("celebgan.train", 1)[1].split("||")[0]  # after ||: what a stopped run says
    return [a for a in command.split() if a != "$(ARGS)"]


def test_demo_composes_the_32px_synthetic_run_without_metrics(tmp_path):
    assert demo_overrides() == ["experiment=demo"]
    cfg = compose_config(demo_overrides(), tmp_path)
    assert cfg.data._target_ == "celebgan.data.modules.SyntheticDataModule"  # no download
    assert (cfg.data.img_size, cfg.data.num_images, cfg.data.batch_size) == (32, 10000, 32)
    assert cfg.trainer.max_epochs == 30  # the length the README's demo timing was measured for
    assert cfg.metrics.every_n_epochs == 0  # no Inception on a CPU, and no best.ckpt
    assert "quality_metrics" not in cfg.callbacks and "best_checkpoint" not in cfg.callbacks
    # The recommended preset at half width: the model is exactly model=high_lr but for ngf/ndf.
    recommended = compose_config(["data.img_size=32", "model=high_lr", "model.generator.ngf=32",
                                  "model.discriminator.ndf=32"], tmp_path).model
    assert OmegaConf.to_container(cfg.model) == OmegaConf.to_container(recommended)
    # ARGS come after experiment=demo on the command line, and win.
    shrunk = compose_config([*demo_overrides(), "trainer.max_epochs=1", "data.num_images=64"], tmp_path)
    assert shrunk.trainer.max_epochs == 1 and shrunk.data.num_images == 64 and shrunk.data.img_size == 32


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_trains_end_to_end_when_shrunk(tmp_path):
    run = tmp_path / "run"
    shrink = ["data.num_images=64", "data.batch_size=16", "trainer.max_epochs=2", "model.generator.ngf=8",
              "model.discriminator.ndf=8", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
              f"hydra.run.dir={run}"]
    result = subprocess.run(["make", "-s", "-C", str(REPO), "demo", f"PY={sys.executable}", "ARGS=" + " ".join(shrink)],
                            env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "experiment=demo" in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    # Progress grids of the 64 fixed latents at 32px: 8 x 8 tiles with make_grid's 2-pixel gaps (under
    # a caption strip here: 16 steps leave the images nearly uniform, and the grid says so).
    grids = sorted((run / "samples").iterdir())
    assert [p.name for p in grids] == ["epoch_0001.png", "epoch_0002.png"]
    assert all(Image.open(p).size[0] == 2 + 8 * 34 and Image.open(p).size[1] > 2 + 8 * 34 for p in grids)
    assert "nearly uniform" in result.stdout + result.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # metrics off: no best
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 2 * 8
    assert ckpt["celebgan_config"]["data"]["img_size"] == 32
    assert ckpt["state_dict"]["generator.main.0.weight"].shape[1] == 8 * 4  # ngf=8, shrunk as asked
