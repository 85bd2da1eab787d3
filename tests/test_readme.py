"""Every command README.md shows works as printed, for a user whose shell has `.venv` activated.

Each command line of a fenced ```bash block is checked without paying for what it does:
  - celebgan's commands (`celebgan-NAME ...`, `python -m celebgan.NAME ...`, also after `torchrun`):
    the executable resolves on the activated PATH and every override composes with the command's
    config (hydra.compose, in this process; a sweep's values one at a time);
  - `make TARGET`: the Makefile has the target;
  - `. .venv/bin/activate`: the environment has that script;
  - SKIPPED (installs, servers, cluster launchers): the executable resolves; pip's pins equal
    pyproject.toml's.
All of that runs in this process. One subprocess (marked integration) then runs the README's first console-script command from a fresh shell, as a user
would: `env -i`, the activation script, a temporary folder, `--cfg job` appended (compose and print,
train nothing). Every ```python block runs, on the session's tiny trained checkpoint.
"""
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONF_DIR, cli_env

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent  # the environment's bin folder: what activation puts first on PATH
INSTALLED = (BIN / "celebgan-train").is_file()  # False where the tests run outside make install's .venv
CONFIGS = {"train": "config", "sample": "sample", "evaluate": "evaluate", "prepare": "prepare", "plot": "plot"}
# Commands that cannot take --cfg job or --help cheaply, each with why; their executable must still resolve.
SKIPPED = {
    "pip": "installs packages from the network",
    "python3 -m venv": "creates an environment",
    "tensorboard": "starts a server",
    "torchrun": "launches ranks on several nodes (its celebgan command line is composed)",
}


def blocks(lang: str) -> list[str]:
    """The fenced blocks of one language, indented ones (inside list items) too, dedented."""
    found = re.findall(rf"^( *)```{lang}\n(.*?)^\1```$", README, re.S | re.M)
    return ["\n".join(line[len(indent):] for line in body.splitlines()) for indent, body in found]


def command_lines() -> list[str]:
    """Each command of the bash blocks: continuation lines joined, comments and `&&` chains split."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words, part = shlex.split(line, comments=True), []
            for word in [*words, "&&"]:  # a quoted value (attributes='{Smiling: 1}') stays one word
                if word == "&&":
                    commands += [shlex.join(part)] if part else []
                    part = []
                else:
                    part.append(word)
    return commands


def celebgan_command(words: list[str]) -> tuple[str, str, list[str]] | None:
    """(executable, command name, overrides) of a celebgan command line, or None."""
    if words[0].startswith("celebgan-"):
        return words[0], words[0].removeprefix("celebgan-"), words[1:]
    for launcher in ("python", "torchrun"):
        if words[0] == launcher and "-m" in words and words[words.index("-m") + 1].startswith("celebgan."):
            at = words.index("-m")
            return launcher, words[at + 1].removeprefix("celebgan."), words[at + 2:]
    return None


def compositions(overrides: list[str]) -> list[list[str]]:
    """The override lists a command line composes: one, or for a sweep (-m) each swept value in turn."""
    args = [o for o in overrides if o not in ("-m", "--multirun")]
    parsed = OverridesParser.create().parse_overrides(args)
    sweeps = [(i, list(o.sweep_string_iterator())) for i, o in enumerate(parsed) if o.is_sweep_override()]
    if not sweeps:
        return [args]
    first = list(args)
    for i, values in sweeps:
        first[i] = f"{parsed[i].get_key_element()}={values[0]}"
    runs = []
    for i, values in sweeps:
        for value in values:
            run = list(first)
            run[i] = f"{parsed[i].get_key_element()}={value}"
            runs.append(run)
    return runs


def activated_path() -> str:
    return f"{BIN}:/usr/bin:/bin"


COMMANDS = command_lines()


def test_the_readme_shows_commands_and_every_block_is_labelled():
    assert len(COMMANDS) > 20 and any(c.startswith("celebgan-evaluate") for c in COMMANDS)
    # A fence without a language would hide its commands from this test.
    openers = re.findall(r"^ *```(\w*)$", README, re.M)[::2]
    assert all(openers), "every fenced block of README.md names its language (bash, python, text)"


@pytest.mark.parametrize("line", COMMANDS)
def test_a_readme_command_resolves_and_composes(line):
    words = shlex.split(line)
    if words[0] in (".", "source"):
        assert words[1] == ".venv/bin/activate" and (not INSTALLED or (BIN / "activate").is_file()), line
        return
    if words[0] == "make":
        targets = re.findall(r"^([a-z-]+):", (REPO / "Makefile").read_text(), re.M)
        assert all(w in targets for w in words[1:] if "=" not in w), line
        return
    if words[0].startswith(".venv/bin/"):  # spelt through the environment rather than activated
        words[0] = words[0].removeprefix(".venv/bin/")
    found = celebgan_command(words)
    executable = found[0] if found else words[0]  # `python` too: the environment's, once activated
    if found is None:
        skipped = next((name for name in SKIPPED if line.replace(".venv/bin/", "").startswith(name)), None)
        assert skipped, f"README command {line!r}: add it to SKIPPED with a reason, or make it composable"
    if INSTALLED:
        assert shutil.which(executable, path=activated_path()), f"{executable} is not on the activated PATH"
    if executable == "pip":
        pins = dict(re.findall(r'"([\w-]+)==([\w.]+)"', (REPO / "pyproject.toml").read_text()))
        for name, version in re.findall(r"([\w-]+)==([\w.]+)", line):
            assert pins.get(name, version) == version, f"{line}: {name} is pinned to {pins[name]} in pyproject.toml"
    if found is None:
        return
    _, name, overrides = found
    assert name in CONFIGS, line
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for run in compositions(overrides):
            compose(config_name=CONFIGS[name], overrides=run, return_hydra_config=True)


@pytest.mark.integration
def test_the_first_command_works_from_a_fresh_shell_after_activation(tmp_path):
    if not INSTALLED or not (BIN / "activate").is_file():
        pytest.skip("the tests run outside the environment that make install creates")
    first = next(c for c in COMMANDS if c.startswith("celebgan-"))
    env = cli_env()
    script = f". {shlex.quote(str(BIN / 'activate'))} && cd {shlex.quote(str(tmp_path))} && {first} --cfg job"
    result = subprocess.run(["env", "-i", f"HOME={tmp_path}", "PATH=/usr/bin:/bin",
                             f"PYTHONPATH={env['PYTHONPATH']}", "OMP_NUM_THREADS=1", "bash", "-c", script],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "max_epochs: 1" in result.stdout and "SyntheticDataModule" in result.stdout
    assert list(tmp_path.iterdir()) == []  # --cfg job trains nothing and writes nothing


def test_the_python_blocks_run(trained_run, conditional_ckpt, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    python = blocks("python")
    assert python
    for block in python:
        ckpt = conditional_ckpt if "attributes=" in block else trained_run.ckpt  # a conditional model's block
        code = block.replace("outputs/runs/RUN/checkpoints/last.ckpt", str(ckpt))
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102  (the README's own snippet)
        if "smiles" in namespace:  # the conditional API block
            assert tuple(namespace["smiles"].shape) == (16, 3, 16, 16)
            assert namespace["G"].attr_names == ["Smiling", "Eyeglasses"]
        elif "G" in namespace:  # the API block: what its comments promise
            assert tuple(namespace["images"].shape) == (16, 3, 16, 16) and len(namespace["faces"]) == 4
            assert tuple(namespace["more"].shape) == (8, 3, 16, 16)


def test_make_demo_time_is_one_statement_wherever_it_is_given():
    statement = "3.5-12 minutes on a 2-core CPU, depending on the machine; the per-epoch lines show an ETA"
    demo_yaml = " ".join(line.lstrip("# ") for line in (REPO / "conf" / "experiment" / "demo.yaml").read_text().splitlines())
    makefile_demo = re.search(r"^demo:.*## (.*)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert statement in README and statement in makefile_demo and statement in demo_yaml
    assert not re.search(r"~3\.5 min|about 5 minutes|4-5 minutes", README + makefile_demo + demo_yaml)
