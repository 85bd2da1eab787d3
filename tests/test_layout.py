"""The package's layout is its architecture: wings import one way (docs/ARCHITECTURE.md)."""
import ast
from pathlib import Path

import celebgan

PACKAGE = Path(celebgan.__file__).resolve().parent
# Lower numbers sit lower: a module may import its own layer's modules and any below it.
LAYERS = {"errors": 0, "io": 0, "devices": 0, "conf": 0, "gan": 1, "data": 2, "metrics": 3, "run": 4}
COMMANDS = 5  # train, sample, evaluate, prepare, plot, trained, cli, the package itself


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], COMMANDS) if len(parts) > 1 else COMMANDS


def celebgan_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "celebgan":
            found.add(node.module)
            if node.module in ("celebgan", *(f"celebgan.{w}" for w in LAYERS)):  # from celebgan.run import lock
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "celebgan")
    return found


def test_wings_import_one_way():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "conf" in path.relative_to(PACKAGE).parts:
            continue
        module = ".".join(("celebgan", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for imported in celebgan_imports(path):
            if layer(imported) > layer(module):
                upward.append(f"{module} imports {imported}")
    assert not upward, "\n".join(upward)


def test_every_module_sits_in_a_wing_or_is_a_command():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "cli", "devices", "errors", "evaluate", "io", "plot", "prepare", "sample",
                   "train", "trained"]
    # conf/ sits at the top of the repository (inside the package only once installed from a wheel)
    wings = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert [w for w in wings if w != "conf"] == ["data", "gan", "metrics", "run"]


def target_module(target: str) -> str:
    """The module a `_target_` names: celebgan.gan.penalties.R1 -> celebgan.gan.penalties."""
    return target.rpartition(".")[0]


def nested_targets(node, outer: str | None = None):
    """(outer target, inner target) for each `_target_` built inside another: the inner object is
    handed to the outer one's constructor, so the outer's module depends on the inner's."""
    if isinstance(node, dict):
        target = node.get("_target_") if isinstance(node.get("_target_"), str) else None
        if target and outer:
            yield outer, target
        for key, value in node.items():
            yield from nested_targets(value, target or outer)
    elif isinstance(node, list):
        for value in node:
            yield from nested_targets(value, outer)


# Upward dependencies through config that are known and not yet removed, each with its reason: none
# since the Judge moved into metrics/ (it is handed run.checkpoint's reader of real faces).
KNOWN_UPWARD: set[tuple[str, str, str]] = set()


def test_config_targets_import_one_way():
    """A `_target_` built inside another is an import by the outer object's module, through the config:
    the same one-way rule holds for it."""
    from omegaconf import OmegaConf

    from celebgan.conf import CONFIG_DIR

    upward = set()
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for outer, inner in nested_targets(tree):
            if not (outer.startswith("celebgan.") and inner.startswith("celebgan.")):
                continue
            if layer(target_module(inner)) > layer(target_module(outer)):
                upward.add((f"conf/{path.relative_to(CONFIG_DIR)}", outer, inner))
    assert upward == KNOWN_UPWARD, "\n".join(f"{f}: {o} is given a {i}" for f, o, i in sorted(upward ^ KNOWN_UPWARD))


def documented_order() -> dict[str, list[str]]:
    """Each wing's modules in the order docs/ARCHITECTURE.md's table lists them ('' the ground floor)."""
    import re

    doc = (PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    orders = {}
    for section in re.split(r"\n## ", doc)[1:]:
        heading = section.splitlines()[0]
        wing = re.match(r"`(\w+)/`", heading)
        if wing or heading.startswith("The ground floor"):
            orders[wing.group(1) if wing else ""] = re.findall(r"^\| `(\w+)\.py` \|", section, re.M)
    return orders


def test_inside_a_wing_a_module_imports_only_those_listed_before_it():
    orders = documented_order()
    assert set(orders) == {"", *(w for w in LAYERS if w not in ("errors", "io", "devices", "conf"))}
    wrong = []
    for wing, order in orders.items():
        folder = PACKAGE / wing
        if wing:
            modules = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
            wrong += [f"{wing}/{m}.py is not in ARCHITECTURE.md's table" for m in modules if m not in order]
        prefix = f"celebgan.{wing}." if wing else "celebgan."
        for position, name in enumerate(order):
            for imported in celebgan_imports(folder / f"{name}.py"):
                other = imported.removeprefix(prefix).split(".")[0] if imported.startswith(prefix) else None
                if other in order and order.index(other) > position:
                    wrong.append(f"{wing or 'ground'}/{name} imports {other}, listed after it")
    assert not wrong, "\n".join(wrong)
