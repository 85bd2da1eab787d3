"""What a checkpoint's stored run config may hold: plain values, and in the sections celebgan builds
objects from, only `_target_`s that celebgan's own configs name.

torch.load(weights_only=True) refuses pickled objects, but a config made of dicts and strings is
enough to make hydra.utils.instantiate import and call anything (`_target_: builtins.open`). So the
stored config is read as data: checked here before anything builds from it.
"""
import functools
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.optim.lr_scheduler import LRScheduler

from celebgan.conf import CONFIG_DIR
from celebgan.errors import UserError
from celebgan.run.plugins import defined_in_trusted, plugins

# The config groups whose files compose the sections built from a checkpoint: `model` (with the
# lr_schedule group, which fills model.lr_scheduler) and `data`.
BUILT_GROUPS = ("model", "lr_schedule", "data")
# Sections a checkpoint's reader builds (checkpoint.load_gan, checkpoint.build_datamodule). The
# others (trainer, callbacks, logger, metrics) are only ever built from a command's own config, so
# a run's checkpoint may name its user's own callback there; they are still read as plain values.
BUILT_SECTIONS = ("model", "data")
PLAIN = (str, int, float, bool, type(None))
# celebgan's run configs nest 4 levels deep (model.penalties.r1.gamma); a user's own callback's
# settings may add a few. Deeper is crafted: Python's recursion (in these checks, in OmegaConf, in
# Hydra) would fail on thousands of levels before any of it could be judged.
MAX_DEPTH = 32
DO_NOT_TRUST = "This file is not a checkpoint celebgan wrote (or it was altered since); do not trust it."


class UntrustedCheckpoint(UserError):
    """A file holding what celebgan never writes into a checkpoint. Unlike a damaged checkpoint,
    resume=auto stops at it rather than skipping it: someone put it there."""


def _targets_in(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "_target_" and isinstance(value, str):
                yield value
            yield from _targets_in(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _targets_in(value)


@functools.cache
def group_targets(group: str) -> frozenset[str]:
    """Every `_target_` in the config files of one config group: celebgan's (conf/GROUP/**.yaml) and
    those of the installed plugins (their conf/GROUP/**.yaml, celebgan.run.plugins)."""
    folders = [CONFIG_DIR, *(p.conf_dir for p in plugins() if p.conf_dir is not None)]
    files = sorted(path for folder in folders for path in (folder / group).rglob("*.yaml"))
    trees = (OmegaConf.to_container(OmegaConf.load(path)) for path in files)  # unresolved: as written
    return frozenset(t for tree in trees for t in _targets_in(tree))


def is_allowed(target: Any, allowed: frozenset[str]) -> bool:
    """An exact name from the configs (allowed), or a class or function defined inside a module the
    reader trusts (an installed plugin's package, trust=[...], CELEBGAN_TRUST)."""
    return isinstance(target, str) and (target in allowed or defined_in_trusted(target))


@functools.cache
def group_instructions(group: str) -> frozenset[str]:
    """Every key of Hydra's (`_target_`, `_partial_`, `_convert_`, ...) that the shipped config files
    of one config group write."""
    files = sorted((CONFIG_DIR / group).rglob("*.yaml"))
    trees = (OmegaConf.to_container(OmegaConf.load(path)) for path in files)
    return frozenset(k for tree in trees for k in _keys_in(tree) if _instruction(k))


def _keys_in(tree: Any) -> Iterator[Any]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield key
            yield from _keys_in(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _keys_in(value)


def _instruction(key: Any) -> bool:
    """A key Hydra's instantiate reads as an instruction (`_args_`, `_target_`), not a setting."""
    return isinstance(key, str) and len(key) > 2 and key.startswith("_") and key.endswith("_")


@functools.cache
def torch_targets() -> frozenset[str]:
    """torch.optim's optimizers and LR schedulers under the names configs give them
    (torch.optim.Adam, torch.optim.lr_scheduler.StepLR). The classes are enumerated: a prefix would
    let through `torch.optim.optimizer.torch.load`, which Hydra resolves to torch.load."""
    found = set()
    for module, base in ((torch.optim, torch.optim.Optimizer), (torch.optim.lr_scheduler, LRScheduler)):
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, base) and obj is not base and not name.startswith("_"):
                found.add(f"{module.__name__}.{name}")
    return frozenset(found)


def allowed_targets() -> frozenset[str]:
    """The `_target_`s a checkpoint's model and data may name, compared as exact strings."""
    return frozenset().union(*map(group_targets, BUILT_GROUPS), torch_targets())


def value_problems(tree: Any, key: str) -> Iterator[tuple[str, Any, str]]:
    """(dotted key, value, what is wrong) for each part of a stored config that is not plain data:
    dicts with string keys, lists, str, int, float, bool, None."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if isinstance(k, str):
                yield from value_problems(v, f"{key}.{k}")
            else:
                yield f"{key}[{k!r}]", k, f"is a key of type {type(k).__name__}, not a string"
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from value_problems(v, f"{key}[{i}]")
    elif not isinstance(tree, PLAIN):
        yield key, tree, f"is a {type(tree).__name__}, not a plain value"
    elif isinstance(tree, str) and "${" in tree:
        # OmegaConf would resolve it (an environment variable, a resolver) when the config is built.
        yield key, tree, "is an interpolation, which a stored (resolved) config never holds"


def allowed_instructions() -> frozenset[str]:
    """Hydra's keys a checkpoint's model and data may hold: those celebgan's own configs write. Not
    `_args_`, which would hand an allowed class positional arguments its configs never give it."""
    return frozenset().union(*map(group_instructions, BUILT_GROUPS))


def target_problems(tree: Any, key: str, allowed: frozenset[str]) -> Iterator[tuple[str, Any, str]]:
    """(dotted key, value, what is wrong) for each `_target_` under `tree` that is not allowed, and
    each other instruction to Hydra that celebgan's configs never write."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == "_target_" and not is_allowed(v, allowed):
                yield f"{key}._target_", v, "names code that neither celebgan's configs nor an installed plugin build"
            elif _instruction(k) and k not in allowed_instructions():
                yield f"{key}.{k}", v, "is an instruction to Hydra that celebgan's configs never write"
            yield from target_problems(v, f"{key}.{k}", allowed)
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from target_problems(v, f"{key}[{i}]", allowed)


def config_problems(config: Any, key: str) -> Iterator[tuple[str, Any, str]]:
    """What makes `config` (a run config stored under `key`) unfit to build from."""
    if not isinstance(config, dict):
        yield key, config, "is not a run config (a dict of settings)"
        return
    deep = too_deep(config, key)
    if deep is not None:
        yield deep, Nested(), f"nests more than {MAX_DEPTH} levels deep (celebgan's run configs nest 4)"
        return
    yield from value_problems(config, key)
    for section in BUILT_SECTIONS:
        if not isinstance(config.get(section), dict):
            yield f"{key}.{section}", config.get(section), "should be a section (every run config has one)"
        else:
            yield from target_problems(config[section], f"{key}.{section}", allowed_targets())


class Nested:
    """Stands for a value too deep to show (its repr would recurse as deep as it nests)."""

    def __repr__(self) -> str:
        return "{...}"


def too_deep(tree: Any, key: str, limit: int = MAX_DEPTH) -> str | None:
    """The dotted key of the top-level section of `tree` (the config stored under `key`) that nests
    more than `limit` dicts and lists deep, or None. Iterative: any depth is measured without
    recursion, and a container that holds itself is too deep, not an endless loop."""
    def sections() -> Iterator[tuple[Any, str]]:
        items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
        for k, v in items:
            yield v, f"{key}.{k}" if isinstance(tree, dict) else f"{key}[{k}]"

    for section_tree, section in sections():
        stack = [(section_tree, 1)]  # (node, its depth: the section is 1 level down)
        while stack:
            node, depth = stack.pop()
            if not isinstance(node, (dict, list)):
                continue
            if depth >= limit:
                return section
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return None


def check_stored_config(config: Any, *, key: str, source: str) -> None:
    """One UntrustedCheckpoint naming the first problem of a stored run config, if it has one.
    `source` says where the config came from (ckpt='PATH')."""
    for where, value, problem in config_problems(config, key):
        shown = repr(value) if len(repr(value)) <= 200 else repr(value)[:200] + "..."
        raise UntrustedCheckpoint(f"{source} holds {where}={shown}, which {problem}. {how_to_trust(value, where)}")


def how_to_trust(value: Any, where: str) -> str:
    """The end of a refusal: for a foreign `_target_`, how to trust its module, if it is yours."""
    if not (where.endswith("._target_") and isinstance(value, str) and "." in value):
        return DO_NOT_TRUST
    module = value.rsplit(".", 1)[0]
    return (f"If you wrote this checkpoint with your own code and trust {module!r}, say so when you read it: "
            f"trust=[{module}] on the command line, or CELEBGAN_TRUST={module} in the environment (or install "
            "that code as a celebgan plugin: docs/PLUGINS.md). A name is trusted only when it resolves to a "
            "class or function defined inside the trusted module. Otherwise: " + DO_NOT_TRUST)
