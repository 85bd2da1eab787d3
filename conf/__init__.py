"""The Hydra configs of every command. In the source tree they sit in conf/ at the top of the
repository; setuptools ships that folder as this package (pyproject.toml's package-dir)."""
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
