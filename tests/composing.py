"""Hydra's composition made cheaper for the test processes and tests/cli_runner.py, with the same
configs as a result. The command lines the tests start one by one compose exactly as a user's do."""
import copy
from pathlib import Path

from celebgan.conf import CONFIG_DIR


def parse_shipped_config_files_once() -> None:
    """From now on in this process, Hydra reads and parses each YAML file of the package's config and
    of Hydra's own once: about a third of each composition, and the files do not change while tests
    run. Hydra mutates what a source loads, so each load gets a copy. Where Hydra lacks these
    classes, nothing changes."""
    try:
        from hydra._internal.sources_registry import SourcesRegistry
        from hydra.core.plugins import Plugins

        Plugins.instance()  # the first scan imports Hydra's plugin modules anew: these are its classes
        FileConfigSource = SourcesRegistry.instance().resolve("file")
        ImportlibResourcesConfigSource = SourcesRegistry.instance().resolve("pkg")
    except (ImportError, AttributeError, ValueError):
        return
    parsed = {}

    def once(load, shipped):
        def load_config(self, config_path):
            if not shipped(self):
                return load(self, config_path)
            key = (type(self), self.path, config_path)
            if key not in parsed:
                parsed[key] = load(self, config_path)
            return copy.deepcopy(parsed[key])

        return load_config

    FileConfigSource.load_config = once(FileConfigSource.load_config,
                                        lambda source: Path(source.path).resolve() == CONFIG_DIR.resolve())
    ImportlibResourcesConfigSource.load_config = once(ImportlibResourcesConfigSource.load_config,
                                                      lambda source: source.path in ("hydra.conf", "celebgan.conf"))




def answer_get_mode_where_nothing_sets_it() -> None:
    """Hydra composes each command's whole config twice: first in Hydra.get_mode, only to read
    hydra.mode (None unless a config or the command line sets it; get_mode also answers None to any
    error), then for the run itself. No shipped config sets hydra.mode (test_config checks), so
    where the command line does not either, get_mode's answer is None without composing: from now on
    in this process it is given without composing, which halves every command's composition. A
    command line that names hydra.mode gets Hydra's own get_mode."""
    from hydra._internal.hydra import Hydra

    get_mode = Hydra.get_mode

    def mode(self, config_name, overrides):
        if any("hydra.mode" in override for override in overrides):
            return get_mode(self, config_name, overrides)
        return None

    Hydra.get_mode = mode
