"""Shared fixtures: composed Hydra configs for tiny CPU runs, and a miniature CelebA tree."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

from celebgan.conf import CONFIG_DIR

CONF_DIR = str(CONFIG_DIR)

# A run small enough for a CPU test: 16px, narrow networks, a handful of steps.
TINY = [
    "data=synthetic",
    "data.img_size=16",
    "data.num_images=64",
    "data.batch_size=16",
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "model.num_fixed=16",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
TINY.append("metrics=none")  # Inception runs at a few img/s on a CPU; metric tests turn it on


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python -m celebgan.train *overrides` would run, writing into output_dir."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    """make_cfg(*overrides) -> a tiny composed config whose run directory is tmp_path/run."""

    def make(*overrides: str) -> DictConfig:
        return compose_config([*TINY, *overrides], tmp_path / "run")

    return make


ATTRS = ["Bald", "Eyeglasses", "Male", "Smiling"]


def make_celeba(root: Path, layout: str = "torchvision", per_split: int = 3, size=(178, 218)) -> list[str]:
    """A miniature CelebA: per_split JPEGs in each of train/valid/test, with partition and
    attribute files, in torchvision's or Kaggle's layout. Returns the image names in order."""
    rng = np.random.default_rng(0)
    if layout == "torchvision":
        base = root / "celeba"
        img_dir = base / "img_align_celeba"
    else:
        base = root
        img_dir = root / "img_align_celeba" / "img_align_celeba"
    img_dir.mkdir(parents=True, exist_ok=True)
    names, parts, attrs = [], [], []
    for split in range(3):
        for _ in range(per_split):
            name = f"{len(names) + 1:06d}.jpg"
            w, h = size
            # Left half dark, right half bright: a flip is visible in the tensor.
            arr = np.zeros((h, w, 3), np.uint8)
            arr[:, w // 2:] = 220
            arr[..., 0] = rng.integers(0, 255)
            Image.fromarray(arr).save(img_dir / name, quality=95)
            names.append(name)
            parts.append(split)
            attrs.append(rng.choice([-1, 1], len(ATTRS)))
    if layout == "torchvision":
        (base / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts)))
        lines = [str(len(names)), " ".join(ATTRS)] + [f"{n} " + " ".join(f"{v:2d}" for v in a) for n, a in zip(names, attrs)]
        (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    else:
        (base / "list_eval_partition.csv").write_text(
            "image_id,partition\n" + "".join(f"{n},{p}\n" for n, p in zip(names, parts)))
        (base / "list_attr_celeba.csv").write_text(
            "image_id," + ",".join(ATTRS) + "\n" + "".join(f"{n}," + ",".join(str(v) for v in a) + "\n" for n, a in zip(names, attrs)))
    return names


@pytest.fixture
def celeba_root(tmp_path) -> Path:
    root = tmp_path / "celeba_root"
    make_celeba(root, "torchvision")
    return root


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


os.environ.setdefault("HYDRA_FULL_ERROR", "1")


# Subprocess runs through the user's entry point, with tests/ importable (for tests/probe.py) and one
# thread per process so that two DDP ranks fit the machine and results do not depend on its size.
TESTS_DIR = Path(__file__).resolve().parent
TINY_CLI = [o for o in TINY if not o.startswith("trainer.enable_model_summary")] + ["trainer.enable_model_summary=false"]


def cli_env() -> dict:
    env = dict(os.environ)
    src = str(TESTS_DIR.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, str(TESTS_DIR), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def cli_cmd(*overrides: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "celebgan.train", *TINY_CLI, *overrides]


def assert_same_training_state(a: dict, b: dict) -> None:
    """Two checkpoints hold the same training state: counters, weights, optimizers, LR schedulers
    and loop progress, bit for bit."""
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:  # G, D, EMA, BatchNorm statistics, fixed latents
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert len(a["optimizer_states"]) == len(b["optimizer_states"]) == 2
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"]):
        assert oa["param_groups"] == ob["param_groups"]  # learning rates included
        for pid in oa["state"]:
            for key, value in oa["state"][pid].items():
                assert torch.equal(value, ob["state"][pid][key]), (pid, key)
    assert a["lr_schedulers"] == b["lr_schedulers"]  # [] without a schedule
    assert a["loops"]["fit_loop"]["epoch_progress"] == b["loops"]["fit_loop"]["epoch_progress"]
