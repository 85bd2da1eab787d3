"""A lab's own code without forking celebgan: a plugin package (entry point `celebgan.plugins`)
brings presets and networks that train, sample and resume like the shipped ones; unpackaged code is
trusted only by the reader's own choice (trust=[...], CELEBGAN_TRUST), never by a checkpoint."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import TINY_CLI, cli_env, run_commands

from celebgan.errors import UserError
from celebgan.run.plugins import defined_in_trusted, trust_modules

NETS = '''
import os  # reachable as mylab.nets.os, which must not make os.system trusted
from torch.nn import Linear  # defined in torch: mylab.nets.Linear is not the lab's code

from celebgan.gan.networks import Generator


class WideGenerator(Generator):
    """The DCGAN generator, one width knob more: the kind of change a lab makes."""

    def __init__(self, *, img_size, nz=100, ngf=64, widen=2):
        super().__init__(img_size=img_size, nz=nz, ngf=ngf * widen)


def helper():
    return 1
'''
PRESET = '''
# A lab preset: the shipped vanilla with the lab's generator.
defaults:
  - vanilla
  - _self_

generator:
  _target_: mylab.nets.WideGenerator
  widen: 2
'''
PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mylab"
version = "0.1.0"

[project.entry-points."celebgan.plugins"]
mylab = "mylab"

[tool.setuptools]
packages = ["mylab"]

[tool.setuptools.package-data]
mylab = ["conf/**/*.yaml"]
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plugin built and installed (pip, into a folder of its own) as a lab would install it."""
    src = tmp_path_factory.mktemp("mylab_src")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "mylab" / "conf" / "model").mkdir(parents=True)
    (src / "mylab" / "__init__.py").write_text("")
    (src / "mylab" / "nets.py").write_text(NETS)
    (src / "mylab" / "conf" / "model" / "mylab_wide.yaml").write_text(PRESET)
    site = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                             "--no-index", "--target", str(site), str(src)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (site / "mylab" / "conf" / "model" / "mylab_wide.yaml").is_file()
    assert any(p.name.startswith("mylab-0.1.0") and p.name.endswith(".dist-info") for p in site.iterdir())
    return site


def run(module: str, *args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def env_with(*paths: Path, **extra: str) -> dict:
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env["PYTHONPATH"]])
    env.pop("CELEBGAN_TRUST", None)
    return {**env, **extra}


@pytest.mark.integration
def test_a_plugin_trains_samples_and_resumes_like_the_shipped_presets(plugin_site, tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    untrusted = {"CELEBGAN_TRUST": None}
    first, sampled, resumed = run_commands([
        ("celebgan.train", [*TINY_CLI, "model=mylab_wide", f"hydra.run.dir={tmp_path / 'run'}"], untrusted),
        ("celebgan.sample", [f"ckpt={ckpt}", "n=4", f"out={tmp_path / 'grid.png'}"], untrusted),
        ("celebgan.train", [*TINY_CLI, "model=mylab_wide", "trainer.max_epochs=2", f"resume={ckpt}"], untrusted),
    ], tmp_path, pythonpath=plugin_site)
    assert first["code"] == 0, first["output"][-3000:]
    assert sampled["code"] == 0, sampled["output"][-3000:]
    assert (tmp_path / "grid.png").is_file()
    assert resumed["code"] == 0, resumed["output"][-3000:]
    assert "Resuming" in resumed["output"]
    # The same checkpoint where the plugin is not installed: refused, with the way to trust it.
    without = run("celebgan.sample", f"ckpt={ckpt}", "n=4", f"out={tmp_path / 'no.png'}",
                  env=env_with(), cwd=tmp_path)
    assert without.returncode == 2 and "mylab.nets.WideGenerator" in without.stderr
    assert "trust=[mylab.nets]" in without.stderr and not (tmp_path / "no.png").exists()


@pytest.mark.integration
def test_unpackaged_code_is_trusted_by_the_reader_only(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "loose_nets.py").write_text(NETS)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    untrusted, by_env = {"CELEBGAN_TRUST": None}, {"CELEBGAN_TRUST": "loose_nets"}
    # Trained with trust=[loose_nets], so the stored config itself says trust: [loose_nets]; the
    # readers after it run in the same interpreter, where loose_nets is already imported.
    trained, refused, *readers = run_commands([
        ("celebgan.train", [*TINY_CLI, "model.generator._target_=loose_nets.WideGenerator",
                            "+model.generator.widen=1", "trust=[loose_nets]", f"hydra.run.dir={tmp_path / 'run'}"],
         untrusted),
        ("celebgan.sample", [f"ckpt={ckpt}", "n=4"], untrusted),
        ("celebgan.sample", [f"ckpt={ckpt}", "n=4", f"out={tmp_path / 'grid1.png'}", "trust=[loose_nets]"], untrusted),
        ("celebgan.sample", [f"ckpt={ckpt}", "n=4", f"out={tmp_path / 'grid0.png'}"], by_env),
    ], tmp_path, pythonpath=loose)
    assert trained["code"] == 0, trained["output"][-3000:]
    assert refused["code"] == 2, refused["output"][-3000:]
    assert "model.generator._target_='loose_nets.WideGenerator'" in refused["output"]
    assert "trust=[loose_nets]" in refused["output"] and "CELEBGAN_TRUST=loose_nets" in refused["output"]
    for ok, out in zip(readers, ("grid1.png", "grid0.png")):
        assert ok["code"] == 0, ok["output"][-3000:]
        assert (tmp_path / out).is_file()


def test_a_trusted_name_must_resolve_to_code_defined_inside_the_module(tmp_path, monkeypatch):
    (tmp_path / "lab_nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("CELEBGAN_TRUST", raising=False)
    try:
        trust_modules([])
        assert not defined_in_trusted("lab_nets.WideGenerator")  # nobody trusted it
        trust_modules(["lab_nets"])
        assert defined_in_trusted("lab_nets.WideGenerator") and defined_in_trusted("lab_nets.helper")
        for reached in ("lab_nets.os.system", "lab_nets.os", "lab_nets.Linear", "lab_nets.Generator",
                        "lab_nets.missing", "lab_nets", "lab_netsX.WideGenerator", "os.system"):
            assert not defined_in_trusted(reached), reached
        monkeypatch.setenv("CELEBGAN_TRUST", "lab_nets")
        trust_modules([])
        assert defined_in_trusted("lab_nets.WideGenerator")
    finally:
        trust_modules([])


@pytest.mark.parametrize("names", [["lab nets"], ["os;rm"], [3]])
def test_trust_takes_module_names_only(names):
    with pytest.raises(UserError, match="not module names"):
        trust_modules(names)

