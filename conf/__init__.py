"""The Hydra configs of every command. In the source tree they sit in conf/ at the top of the
repository; setuptools ships that folder as this package (pyproject.toml's package-dir).

Importing it registers the configs' `celebgan.*` resolvers (resolvers.py): Hydra imports this
package to read the configs (pkg://celebgan.conf), so they are there wherever a config is composed."""
from pathlib import Path

from celebgan.conf.resolvers import register

CONFIG_DIR = Path(__file__).resolve().parent
register()
