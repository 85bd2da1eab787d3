"""The package's layout is its architecture: wings import one way (docs/ARCHITECTURE.md)."""
import ast
from pathlib import Path

import celebgan

PACKAGE = Path(celebgan.__file__).resolve().parent
# Lower numbers sit lower: a module may import its own layer's modules and any below it.
LAYERS = {"errors": 0, "io": 0, "devices": 0, "conf": 0, "gan": 1, "data": 2, "metrics": 3, "run": 4}
COMMANDS = 5  # train, sample, evaluate, prepare, plot, trained, attributes, the package itself


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
    assert top == ["__init__", "attributes", "devices", "errors", "evaluate", "io", "plot", "prepare", "sample",
                   "train", "trained"]
    # conf/ sits at the top of the repository (inside the package only once installed from a wheel)
    wings = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert [w for w in wings if w != "conf"] == ["data", "gan", "metrics", "run"]
