"""A lab's own networks, losses, penalties, data modules and presets, without forking celebgan.

A plugin is an installed package that names itself in the `celebgan.plugins` entry-point group of
its own pyproject.toml (docs/PLUGINS.md):

    [project.entry-points."celebgan.plugins"]
    mylab = "mylab"

The value is the plugin's package. Its `conf/` folder (beside its __init__.py), if it has one, joins
the config search path of every celebgan command (hydra_plugins/celebgan_plugins), so
conf/model/mylab_gan.yaml is `model=mylab_gan`; and the code defined inside the package may be
named by the `_target_`s of a checkpoint's stored config, as celebgan's own configs' may (trust.py).

For code that is not packaged, the reader names the modules it trusts: the `trust=[mylab.nets]`
setting of the command it runs, or CELEBGAN_TRUST=mylab.nets in its environment. What is trusted is
always the reader's choice (an installed package, a setting, an environment variable): a
checkpoint's own stored `trust` is never read.
"""
import functools
import importlib
import importlib.util
import inspect
import logging
import os
import re
import types
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from celebgan.errors import UserError

ENTRY_POINT_GROUP = "celebgan.plugins"
TRUST_ENV = "CELEBGAN_TRUST"
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plugin:
    name: str               # the entry point's name
    package: str            # the package it names (mylab)
    conf_dir: Path | None   # its conf/ folder: config groups joining celebgan's


@functools.cache
def plugins() -> tuple[Plugin, ...]:
    """The installed plugins, found from their packages' metadata. A package is located without
    running it (importlib.util.find_spec of a top-level package imports nothing)."""
    found = []
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        package = entry.value.split(":")[0].strip()
        try:
            spec = importlib.util.find_spec(package) if MODULE_NAME.fullmatch(package) else None
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            log.warning("The celebgan plugin %r names package %r, which is not importable here; it is skipped.",
                        entry.name, package)
            continue
        locations = list(spec.submodule_search_locations or [])
        conf = Path(locations[0]) / "conf" if locations else None
        found.append(Plugin(entry.name, package, conf if conf is not None and conf.is_dir() else None))
    return tuple(found)


_trusted_by_command: tuple[str, ...] = ()


def check_module_names(names: Iterable, where: str) -> tuple[str, ...]:
    names = tuple(names)
    bad = [n for n in names if not (isinstance(n, str) and MODULE_NAME.fullmatch(n))]
    if bad:
        raise UserError(f"{where} names {bad!r}, which are not module names: give dotted Python module "
                        "names, e.g. trust=[mylab.nets] (or CELEBGAN_TRUST=mylab.nets,mylab.losses).")
    return names


def trust_modules(names: Iterable[str] | None) -> None:
    """The reader's own choice of modules whose code a checkpoint may name (a command's `trust`
    setting, from its command line; or from Python). Replaces the previous choice."""
    global _trusted_by_command
    _trusted_by_command = check_module_names(names or (), "trust")


def trusted_modules() -> tuple[str, ...]:
    """Modules whose own code a stored config may name: the installed plugins' packages, the
    command's `trust` setting and CELEBGAN_TRUST."""
    env = [n.strip() for n in os.environ.get(TRUST_ENV, "").split(",") if n.strip()]
    return (*(p.package for p in plugins()), *_trusted_by_command, *check_module_names(env, TRUST_ENV))


def within(module_name: str, package: str) -> bool:
    return module_name == package or module_name.startswith(package + ".")


def defined_in_trusted(target: str) -> bool:
    """Whether the dotted `target` names a class or function defined inside a trusted module.

    The name is resolved, not compared as text: `mylab.nets.os.system` starts with a trusted
    module's name but reaches os.system through an import, so it is refused. Only modules inside
    the trusted one are imported on the way (the reader trusts them); every step must stay inside it.
    """
    if not isinstance(target, str) or not MODULE_NAME.fullmatch(target):
        return False
    for package in trusted_modules():
        if not within(target, package) or target == package:
            continue
        try:
            obj = importlib.import_module(package)
        except ImportError:
            continue
        path = package
        for part in target[len(package) + 1:].split("."):
            path = f"{path}.{part}"
            child = getattr(obj, part, None) if not isinstance(obj, types.ModuleType) or hasattr(obj, part) else None
            if child is None and isinstance(obj, types.ModuleType):
                try:
                    child = importlib.import_module(path)
                except ImportError:
                    child = None
            if child is None or (isinstance(child, types.ModuleType) and not within(child.__name__, package)):
                break
            obj = child
        else:
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and within(getattr(obj, "__module__", "") or "", package):
                return True
    return False
