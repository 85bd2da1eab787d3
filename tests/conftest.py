"""Shared fixtures: composed Hydra configs for tiny CPU runs, the trained runs a session shares, and
a miniature CelebA tree."""
import copy
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

import forkserver
from composing import parse_shipped_config_files_once
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


def pytest_configure(config):
    # A suite started under nohup, or as a background job of a script (which ignores SIGINT), would
    # hand its runs a SIGHUP or SIGINT that is ignored, and a run keeps an ignored signal ignored (as
    # nohup means it to). The runs the tests start get the signals' defaults: a handler set here is
    # reset to the default in every child process. SIGHUP's handler keeps this process as deaf to a
    # hang-up as it was; SIGINT gets Python's own. Only in a process that runs tests: an xdist
    # controller keeps what it was given, and its workers start with it.
    import signal

    controller = config.getoption("numprocesses", default=None) not in (None, 0) and \
        not os.environ.get("PYTEST_XDIST_WORKER")
    if controller:
        return
    if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        signal.signal(signal.SIGHUP, lambda signum, frame: None)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _one_thread():
    # One thread, as the command-line runs of the tests have (cli_env): the same float sums in
    # both, and on a loaded 2-core machine several times faster than two threads for these tiny nets.
    torch.set_num_threads(1)


parse_shipped_config_files_once()
_composed: dict[tuple, DictConfig] = {}


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python -m celebgan.train *overrides` would run, writing into output_dir.

    Hydra composes each command line once per test process (from the working directory and
    sys.path it was given: what a composed config can depend on, since its interpolations resolve
    when read); every call gets its own copy."""
    key = (tuple(overrides), os.getcwd(), tuple(sys.path))
    if key not in _composed:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            _composed[key] = compose(config_name="config", overrides=overrides)
    cfg = copy.deepcopy(_composed[key])
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


@pytest.fixture(autouse=True)
def _processes_only_where_marked(request, monkeypatch):
    """A test that starts a process (a command line, DDP ranks, a kernel, a server, pip) is marked
    `integration`, which `make test-quick` leaves out. The marker is checked, not remembered: an
    unmarked test that starts one fails here, naming the marker."""
    if request.node.get_closest_marker("integration") is not None:
        return
    popen_init = subprocess.Popen.__init__

    def refuse(self, args, *rest, **kwargs):
        if isinstance(args, (list, tuple)) and args and args[0] == "uname":  # platform.processor()'s own probe
            return popen_init(self, args, *rest, **kwargs)
        shown = " ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args)
        raise AssertionError(f"{request.node.nodeid} starts a process ({shown[:120]}) but is not marked "
                             "@pytest.mark.integration: mark it, so that make test-quick leaves it out.")
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


os.environ.setdefault("HYDRA_FULL_ERROR", "1")
# Caches that commands keep (rendered synthetic faces, real features) go to one folder per test
# session, never into the checkout's outputs/; command-line runs inherit it.
os.environ.setdefault("CELEBGAN_CACHE", str(Path(tempfile.mkdtemp(prefix="celebgan-test-cache-"))))


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


# Command lines of the project run forked from one interpreter per test process that has imported
# the libraries already (tests/forkserver.py says what is served and what starts a process);
# CELEBGAN_TEST_FORKSERVER=0 starts every one as a process.
forkserver.install(cli_env)


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


# metrics=random: FID/KID through RandomFeatures, a tiny fixed network in place of Inception
# (tests/conf/metrics/random.yaml), for runs in the test's process and on the command line alike.
RANDOM_METRICS = [f"hydra.searchpath=[file://{TESTS_DIR / 'conf'}]", "metrics=random"]


def random_features(cfg: DictConfig) -> DictConfig:
    """The same network in a composed config that names Inception (celebgan.evaluate's, whose
    config holds its metrics settings itself, or metrics=small's)."""
    with open_dict(cfg):
        cfg.metrics.feature_extractor = {"_target_": "celebgan.metrics.features.RandomFeatures", "_partial_": True}
    return cfg


def train_under_hydra(overrides: list[str], output_dir: Path) -> dict:
    """train() as `python -m celebgan.train` runs it, with Hydra's runtime (its group choices) set."""
    from celebgan.train import train

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.paths.output_dir = str(output_dir)
        return train(cfg)
    finally:
        HydraConfig.instance().cfg = None


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of a run folder, for a test that resumes, locks or otherwise writes into a trained run."""
    shutil.copytree(run, dest)
    return dest


@dataclass(frozen=True)
class TrainedRun:
    dir: Path
    ckpt: Path  # dir/checkpoints/last.ckpt
    metrics: dict  # what train() returned
    log: str  # what it logged, INFO and above


# The trained run of the session: TINY for two epochs (8 training steps, 16 optimizer steps), as the
# command trains it. Every test that needs "a trained run" reads this one and never writes into it
# (copy_run first); the session checks at its end that nothing did.
TRAINED_EPOCHS = 2
TRAINED = [*TINY, f"trainer.max_epochs={TRAINED_EPOCHS}"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    import logging

    torch.set_num_threads(1)  # as every test runs (_one_thread): runs trained here and there agree bit for bit
    run = tmp_path_factory.mktemp("trained") / "run"
    records: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        metrics = train_under_hydra(TRAINED, run)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    before = snapshot(run)
    yield TrainedRun(dir=run, ckpt=run / "checkpoints" / "last.ckpt", metrics=metrics, log="\n".join(records))
    assert snapshot(run) == before, "a test wrote into the shared trained run: copy_run it first"


@dataclass(frozen=True)
class DDPRun:
    root: Path  # holds run/, probe/ (each rank's Probe record) and cache/ (the real features)
    dir: Path
    ranks: list  # Probe's record of rank 0 and rank 1


# The 2-process DDP run of the session, through the command line (gloo on CPU): 64 images in
# batches of 8 per rank for two epochs (4 training steps per rank and epoch), measuring FID/KID
# each epoch through metrics=random. trainer.strategy stays auto: `trainer.devices=2` alone.
DDP_RUN = ["data.batch_size=8", "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.devices=2",
           *RANDOM_METRICS, "metrics.n_samples=48", "metrics.n_real=48"]


def shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder for what the whole test session builds once: under pytest-xdist (make test runs the
    tests in several worker processes) the workers share one, built by whichever asks first."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.getbasetemp().parent / name
    return tmp_path_factory.mktemp(name)


@pytest.fixture(scope="session")
def ddp_run(tmp_path_factory) -> DDPRun:
    from filelock import FileLock

    root = shared_dir(tmp_path_factory, "ddp")
    run, probe = root / "run", root / "probe"
    with FileLock(f"{root}.lock"):
        if not (probe / "rank1.pt").is_file():
            root.mkdir(exist_ok=True)
            result = subprocess.run(
                cli_cmd(*DDP_RUN, f"metrics.cache_dir={root / 'cache'}", f"hydra.run.dir={run}",
                        "+callbacks.probe._target_=probe.Probe", f"+callbacks.probe.dirpath={probe}"),
                cwd=root, env=cli_env(), capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(probe / f"rank{r}.pt", weights_only=True) for r in range(2)]
    before = snapshot(root)
    yield DDPRun(root=root, dir=run, ranks=ranks)
    assert snapshot(root) == before, "a test wrote into the shared DDP run: copy_run it first"


class OnStart(L.Callback):
    """Calls fn(module) when fit starts: to hook or replace a part of the module."""

    def __init__(self, fn):
        self.fn = fn

    def on_train_start(self, trainer, module):
        self.fn(module)


def fit_steps(cfg: DictConfig, steps: int, *, callbacks=(), on_start=None, seed: int = 0):
    """`steps` training steps of cfg's model on cfg's data (at cfg.trainer.precision), built by
    celebgan.train.build as a run is, in a Trainer without the config's callbacks, logger,
    checkpoints or run folder: for tests that watch the training step itself. on_start(gan) runs
    when fit starts. Returns (gan, trainer)."""
    from celebgan.train import build

    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.seed = seed
        cfg.callbacks = {}
        cfg.logger = None
        cfg.trainer.accelerator = "cpu"
        if cfg.trainer.precision == "auto":
            cfg.trainer.precision = "32-true"
        cfg.trainer.max_epochs = -1
        cfg.trainer.max_steps = steps  # training steps; build hands Lightning the optimizer steps
        cfg.trainer.enable_checkpointing = False
        cfg.trainer.enable_progress_bar = False
        cfg.trainer.enable_model_summary = False
    built = build(cfg, callbacks=[*callbacks, *([OnStart(on_start)] if on_start else [])])
    built.trainer.fit(built.model, datamodule=built.datamodule)
    return built.model, built.trainer


def run_commands(cases: list[tuple], cwd: Path, pythonpath: Path | None = None) -> list[dict]:
    """Each (module, args) or (module, args, env) as `python -m MODULE ARGS` would run it in cwd
    (with the variables of env set for that case alone), all in one interpreter
    (tests/cli_runner.py): {"code", "output", "seconds"} each. pythonpath: a folder put first on it."""
    import json

    work = Path(cwd)
    (work / "cases.json").write_text(json.dumps(
        [{"module": c[0], "args": c[1], "cwd": str(work), "env": c[2] if len(c) > 2 else {}} for c in cases]))
    env = cli_env()
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env['PYTHONPATH']}"
    try:
        subprocess.run([sys.executable, str(TESTS_DIR / "cli_runner.py"), str(work / "cases.json"),
                        str(work / "results.json")], env=env, check=True, timeout=600)
        return json.loads((work / "results.json").read_text())
    finally:
        for name in ("cases.json", "results.json"):
            (work / name).unlink(missing_ok=True)


CONDITIONAL = [*TINY, "model=projection", "data.attributes=[Smiling,Eyeglasses]"]


@pytest.fixture(scope="session")
def conditional_ckpt(tmp_path_factory) -> Path:
    """last.ckpt of a tiny projection run on two attributes (Smiling, Eyeglasses), shared by the session."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("conditional") / "run"
    train_under_hydra(CONDITIONAL, run)
    return run / "checkpoints" / "last.ckpt"
