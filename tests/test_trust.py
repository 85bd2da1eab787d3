"""A checkpoint's stored config never chooses what code runs: crafted checkpoints (plain dicts,
strings and tensors, which torch.load(weights_only=True) accepts) through every entry point that
reads one, each refused with one message before anything is built; clean configs still load."""
import logging
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, TINY, TINY_CLI, compose_config, run_commands
from omegaconf import OmegaConf

import celebgan
from celebgan.run import resume
from celebgan.run.checkpoint import build_datamodule, load_gan, read_checkpoint, upgrade_config
from celebgan.errors import UserError
from celebgan.gan.module import GAN
from celebgan.sample import MODES
from celebgan.train import train
from celebgan.run.trust import allowed_targets, check_stored_config, config_problems, group_targets

EVIL_MODULE = "celebgan_trust_evil"  # a module whose import writes a marker file


@pytest.fixture(scope="module")
def clean(trained_run) -> Path:
    return trained_run.ckpt


@pytest.fixture
def evil_module(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(folder to put on sys.path, marker its module writes when imported)."""
    folder, marker = tmp_path / "evil", tmp_path / "imported"
    folder.mkdir()
    (folder / f"{EVIL_MODULE}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\ndef hook(*a, **k): pass\n")
    monkeypatch.syspath_prepend(str(folder))
    return folder, marker


class OpensOnLoad:
    """Unpickled (torch.load with weights_only=False), it creates the file at `path`."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def pickle_bomb(tmp: Path) -> str:
    torch.save(OpensOnLoad(tmp / "unpickled"), tmp / "bomb.pt")
    return str(tmp / "bomb.pt")


def poisons(tmp: Path) -> dict[str, tuple]:
    """name -> (edit of the stored config, dotted key the message names, a file that must not appear)."""
    victim = tmp / "victim.txt"
    opener = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    return {
        "open": (lambda c: c["model"].update(generator=opener),
                 "celebgan_config.model.generator._target_", victim),
        "open_in_list": (lambda c: c["model"].update(augment=[opener]),
                         "celebgan_config.model.augment[0]._target_", victim),
        "write_text": (lambda c: c["data"].update({"_target_": "pathlib.Path.write_text", "self": str(victim),
                                                   "data": "x"}),
                       "celebgan_config.data._target_", victim),
        "module": (lambda c: c["model"]["d_loss"].update({"_target_": f"{EVIL_MODULE}.hook"}),
                   "celebgan_config.model.d_loss._target_", tmp / "imported"),
        # Passes a prefix check; Hydra resolves it to torch.load (and weights_only=False runs pickles).
        "prefix": (lambda c: c["model"].update(lr_scheduler={
            "_target_": "torch.optim.optimizer.torch.load", "f": pickle_bomb(tmp), "weights_only": False}),
                   "celebgan_config.model.lr_scheduler._target_", tmp / "unpickled"),
        "tensor": (lambda c: c["model"]["generator"].update(nz=torch.tensor(100)),
                   "celebgan_config.model.generator.nz", None),
        "interpolation": (lambda c: c["data"].update(root="${oc.env:HOME}"), "celebgan_config.data.root", None),
        # Positional arguments for an allowed class, which its configs never give it.
        "args": (lambda c: c["model"]["generator"].update(_args_=[16]), "celebgan_config.model.generator._args_",
                 None),
        # Thousands of levels: anything that recursed into it (the upgrade of old configs, OmegaConf)
        # would fail with RecursionError before the checks could judge it.
        "deep": (lambda c: c["model"]["generator"].update(settings=nested(5000)), "celebgan_config.model", None),
    }


def nested(depth: int) -> dict:
    tree: dict = {}
    for _ in range(depth):
        tree = {"x": tree}
    return tree


def poisoned(clean: Path, tmp: Path, name: str) -> tuple[Path, str, Path | None]:
    """(a copy of the clean checkpoint with poison `name`, the key the refusal names, its victim file)."""
    edit, key, victim = poisons(tmp)[name]
    ckpt = torch.load(clean, map_location="cpu", weights_only=True)
    edit(ckpt["celebgan_config"])
    path = tmp / f"{name}.ckpt"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # pickle recurses as deep as "deep" nests
    try:
        torch.save(ckpt, path)
    finally:
        sys.setrecursionlimit(limit)
    return path, key, victim


def refusal(key: str) -> str:
    return rf"{re.escape(key)}=.*do not trust it"


@pytest.mark.parametrize("name", list(poisons(Path("."))))
def test_load_generator_refuses_a_poisoned_config_and_builds_nothing(clean, tmp_path, evil_module, name):
    path, key, victim = poisoned(clean, tmp_path, name)
    with pytest.raises(UserError, match=refusal(key)):
        celebgan.load_generator(path, device="cpu")
    assert victim is None or not victim.exists()
    assert not evil_module[1].exists() and EVIL_MODULE not in sys.modules


@pytest.mark.parametrize("reader", [read_checkpoint, load_gan, celebgan.load_generator,
                                    lambda path: resume.check_epochs(path, 10)],
                         ids=["read_checkpoint", "load_gan", "load_generator", "check_epochs"])
def test_every_public_reader_checks_the_stored_config(clean, tmp_path, reader):
    path, key, victim = poisoned(clean, tmp_path, "open")
    with pytest.raises(UserError, match=refusal(key)):
        reader(path)
    assert not victim.exists()


def assert_one_refusal(result: dict, key: str, case) -> None:
    out = result["output"]
    assert result["code"] == 2, (case, out[-2000:])
    assert "Traceback" not in out and out.count("do not trust it") == 1, (case, out[-2000:])
    assert key in out, (case, out[-2000:])


@pytest.mark.integration
def test_every_command_refuses_a_poisoned_checkpoint_with_one_message(clean, tmp_path, evil_module):
    """Every entry point that reads a checkpoint with the module poison (whose import would leave a
    marker), and every poison through sample and resume."""
    cases, expected = [], []

    def add(module: str, args: list[str], key: str) -> None:
        cases.append((module, args))
        expected.append(key)

    path, key, _ = poisoned(clean, tmp_path, "module")
    for mode in MODES:
        out = tmp_path / "out" / mode
        add("celebgan.sample", [f"ckpt={path}", f"mode={mode}", f"out={out}", "device=cpu"], key)
    add("celebgan.evaluate", [f"ckpt={path}", f"output={tmp_path / 'out' / 'eval.json'}", "device=cpu"], key)
    for name in poisons(tmp_path):
        path, key, _ = poisoned(clean, tmp_path, name)
        add("celebgan.sample", [f"ckpt={path}", f"out={tmp_path / 'out' / name}.png", "device=cpu"], key)
        add("celebgan.train", [*TINY_CLI, f"resume={path}", f"hydra.run.dir={tmp_path / 'runs' / name}"], key)
        # resume=auto meets it as the newest last.ckpt next to the new run's folder
        auto = tmp_path / "auto" / name
        (auto / "old" / "checkpoints").mkdir(parents=True)
        shutil.copy(path, auto / "old" / "checkpoints" / "last.ckpt")
        add("celebgan.train", [*TINY_CLI, "resume=auto", f"hydra.run.dir={auto / 'new'}"], key)

    results = run_commands(cases, tmp_path, pythonpath=evil_module[0])
    for case, key, result in zip(cases, expected, results):
        assert_one_refusal(result, key, case)
    assert not (tmp_path / "out").exists() and not (tmp_path / "outputs").exists()
    assert not list(tmp_path.glob("runs/*")) and not list(tmp_path.glob("auto/*/new"))  # no run folder left
    assert not (tmp_path / "victim.txt").exists() and not (tmp_path / "unpickled").exists()
    assert not evil_module[1].exists()


# --- no false refusals ----------------------------------------------------------------------------

def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("overrides", [[f"model={m}"] for m in group_options("model")]
                         + [[f"model/loss={m}"] for m in group_options("model/loss")]
                         + [[f"model/penalty={m}"] for m in group_options("model/penalty")]
                         + [[f"lr_schedule={s}"] for s in group_options("lr_schedule")]
                         + [["data=celeba32"], ["data=celeba64"], ["experiment=demo"]],
                         ids=lambda o: o[0])
def test_every_shipped_config_is_accepted(tmp_path, overrides):
    other_data = overrides[0].startswith("data=")  # then without the synthetic data's settings
    tiny = [o for o in TINY if not (other_data and o.startswith(("data=", "data.num_images")))]
    config = OmegaConf.to_container(compose_config([*tiny, *overrides], tmp_path / "run"), resolve=True)
    assert list(config_problems(config, "celebgan_config")) == []


@pytest.mark.parametrize("objective", ["bce", "hinge"])
def test_configs_upgraded_from_old_checkpoints_pass_the_same_allow_list(objective):
    model = {"_target_": "celebgan.module.GAN", "objective": objective, "real_label": 0.9}
    upgraded = upgrade_config({"model": model})["model"]
    assert {upgraded["_target_"], upgraded["d_loss"]["_target_"], upgraded["g_loss"]["_target_"]} <= allowed_targets()


def test_a_clean_checkpoint_loads_also_with_its_users_own_callback(clean, tmp_path):
    ckpt = torch.load(clean, map_location="cpu", weights_only=True)
    # Sections never built from a checkpoint may name the user's own code (a run with +callbacks.x=...).
    ckpt["celebgan_config"]["callbacks"]["mine"] = {"_target_": "my_project.MyCallback"}
    torch.save(ckpt, tmp_path / "own.ckpt")
    G = celebgan.load_generator(tmp_path / "own.ckpt", device="cpu")
    assert G.sample(2, seed=0).shape == (2, 3, 16, 16)


def test_exact_names_only():
    allowed = allowed_targets()
    assert {"torch.optim.Adam", "torch.optim.lr_scheduler.StepLR", "celebgan.gan.module.GAN"} <= allowed
    assert not {"torch.optim.optimizer.torch.load", "torch.optim.lr_scheduler.torch.load", "torch.optim.Optimizer",
                "torch.optim.lr_scheduler.LRScheduler"} & allowed
    assert group_targets("data") == {"celebgan.data.modules.CelebADataModule", "celebgan.data.modules.SyntheticDataModule"}


@pytest.mark.parametrize("config, key", [
    ("not a dict", "celebgan_config="),
    ({"model": {}, "data": {1: "x"}}, "celebgan_config.data[1]="),
    ({"model": {"augment": ("color",)}, "data": {}}, "celebgan_config.model.augment="),
    ({"model": {"name": b"GAN"}, "data": {}}, "celebgan_config.model.name="),
    ({"model": {}}, "celebgan_config.data="),
    ({"model": {"_target_": {"nested": "dict"}}, "data": {}}, "celebgan_config.model._target_="),
    ({"model": {"generator": {"_args_": [16]}}, "data": {}}, "celebgan_config.model.generator._args_="),
    ({"model": {}, "data": {}, "trainer": nested(5000)}, "celebgan_config.trainer={...}"),
    ({"model": {}, "data": [nested(40)]}, "celebgan_config.data={...}"),
])
def test_anything_but_plain_values_is_refused(config, key):
    with pytest.raises(UserError, match="ckpt='x' holds " + re.escape(key)):
        check_stored_config(config, key="celebgan_config", source="ckpt='x'")


# --- what reading a checkpoint may build and write --------------------------------------------------

def test_rebuilt_data_never_builds_a_prepared_file(celeba_root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    data = {"_target_": "celebgan.data.modules.CelebADataModule", "root": str(celeba_root), "img_size": 16,
            "batch_size": 1, "num_workers": 0, "prepared": True, "prepared_dir": str(elsewhere)}
    build_datamodule({"data": data}).setup("fit")  # reads the JPEGs
    assert not elsewhere.exists()
    with pytest.raises(UserError, match="not one of celebgan's data modules"):
        build_datamodule({"data": {**data, "_target_": "celebgan.gan.module.GAN"}})


def lightning_poison(clean: Path, tmp: Path) -> Path:
    """The clean checkpoint with hyperparameters that ask Lightning's loader to build the module
    through an instantiator (lightning.pytorch.cli's, which needs jsonargparse, not installed)."""
    ckpt = torch.load(clean, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"].update(_instantiator="lightning.pytorch.cli.instantiate_module",
                                    _class_path="celebgan.gan.module.GAN")
    path = tmp / "hparams.ckpt"
    torch.save(ckpt, path)
    return path


def test_lightning_loader_takes_only_values_from_the_hyperparameters(clean, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning.pytorch.cli", None)  # importing it would fail
    gan, _ = load_gan(clean)
    parts = {name: getattr(gan, name) for name in ("generator", "discriminator")}
    loaded = GAN.load_from_checkpoint(lightning_poison(clean, tmp_path), g_optimizer=torch.optim.Adam,
                                      d_optimizer=torch.optim.Adam, **parts)
    assert type(loaded) is GAN and loaded.hparams.num_fixed == gan.hparams.num_fixed


def test_resume_takes_nothing_from_the_hyperparameters(clean, make_cfg, tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning.pytorch.cli", None)  # importing it would fail
    path = lightning_poison(clean, tmp_path)
    with caplog.at_level(logging.INFO):
        train(make_cfg("trainer.max_epochs=3", f"resume={path}"))
    assert f"Restored all states from the checkpoint at {path}" in caplog.text
    resumed = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 3 * 8  # the clean run's two epochs and one more, each of 4 D and 4 G steps
