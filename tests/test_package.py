"""celebgan as an installed package: configs found through the package from any directory, every
console script, and a wheel installed outside the checkout that trains."""
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest
from conftest import TINY_CLI

import celebgan
from celebgan.conf import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["celebgan-train", "celebgan-sample", "celebgan-evaluate", "celebgan-prepare", "celebgan-plot"]


def outside_env() -> dict:
    """The environment of a user outside the checkout: nothing on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_package_data_ships_every_config_file():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    patterns = setuptools["package-data"]["celebgan.conf"]
    conf = REPO / setuptools["package-dir"]["celebgan.conf"]  # conf/ at the top: the one copy
    assert conf == REPO / "conf" and "celebgan.conf" in setuptools["packages"]
    files = {p for p in conf.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".py"}
    assert len(files) > 30 and celebgan.CONFIG_DIR == CONFIG_DIR == conf
    shipped = {p for pattern in patterns for p in conf.glob(pattern)}  # setuptools globs the same way
    assert files <= shipped, sorted(str(f) for f in files - shipped)


def test_every_command_has_a_console_script():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert sorted(scripts) == sorted(SCRIPTS)
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func))


@pytest.mark.integration
def test_train_finds_its_configs_from_another_directory(tmp_path):
    result = subprocess.run([sys.executable, "-m", "celebgan.train", "--cfg", "job", "trainer.max_steps=400"],
                            cwd=tmp_path, env=outside_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max_steps: 400" in result.stdout
    assert not (tmp_path / "outputs").exists()  # --cfg job prints and writes nothing


@pytest.mark.integration
@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_trains(tmp_path):
    """Build a wheel, install it into a fresh venv that sees this environment's dependencies
    but not the checkout, and run the console script from an empty directory."""
    # Built from a copy: setuptools leaves build/ and *.egg-info/ in the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "outputs", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(wheels), str(source)], check=True, timeout=300, capture_output=True)
    wheel = next(wheels.glob("celebgan-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # The dependencies come from this environment as a plain path entry: its .pth files, the
    # editable install of the checkout among them, are not processed there.
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, timeout=300, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    env = outside_env()
    where = subprocess.run([str(python), "-c", "import celebgan; print(celebgan.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where

    train = str(env_dir / "bin" / "celebgan-train")
    job = subprocess.run([train, "--cfg", "job", "data=synthetic"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr[-2000:]
    assert "SyntheticDataModule" in job.stdout
    run = subprocess.run([train, *TINY_CLI, "trainer.max_steps=4"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    [run_dir] = (work / "outputs" / "runs").iterdir()  # outputs/ in the current directory, as from a checkout
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    sample = subprocess.run([str(env_dir / "bin" / "celebgan-sample"), f"ckpt={ckpt}", "n=4", "nrow=2"], cwd=work,
                            env=env, capture_output=True, text=True, timeout=120)
    assert sample.returncode == 0, sample.stderr[-2000:]
    assert list((work / "outputs" / "sample").rglob("*.png"))
    api = subprocess.run([str(python), "-c", f"import celebgan; print(tuple(celebgan.load_generator({str(ckpt)!r})"
                          ".sample(3, seed=0).shape))"], cwd=work, env=env, capture_output=True, text=True)
    assert api.stdout.strip() == "(3, 3, 16, 16)", api.stderr[-2000:]
    for script in SCRIPTS:
        assert (env_dir / "bin" / script).is_file(), script


HEAVY = ("torch", "lightning", "torchvision", "torchmetrics", "tensorboard")


@pytest.mark.parametrize("module", ["celebgan", "celebgan.train", "celebgan.sample", "celebgan.evaluate",
                                    "celebgan.prepare", "celebgan.plot"])
@pytest.mark.integration
def test_importing_a_command_loads_no_deep_learning_library(module):
    """--help, --cfg job and a mistake on the command line answer in a second or two because
    nothing imports torch, Lightning or TensorBoard before a command runs."""
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_python_api_is_there_on_first_use():
    assert celebgan.load_generator.__module__ == "celebgan.trained"
    assert celebgan.TrainedGenerator.__name__ == "TrainedGenerator"
    with pytest.raises(AttributeError):
        celebgan.no_such_name


@pytest.mark.integration
def test_version_is_celebgans_with_its_libraries():
    from importlib.metadata import version

    result = subprocess.run([sys.executable, "-m", "celebgan.sample", "--version"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"celebgan {celebgan.__version__} (torch {version('torch')}, "
                                    f"lightning {version('lightning')}")
    assert "Hydra" not in result.stdout
