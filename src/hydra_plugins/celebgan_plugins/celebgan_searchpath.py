"""Hydra finds this module in the hydra_plugins namespace: it adds each installed celebgan plugin's
conf/ folder (celebgan.run.plugins) to the config search path of celebgan's commands, after
celebgan's own configs, so a lab's presets compose like the shipped ones."""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class CelebganPluginSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        # Only for celebgan's configs (a command's pkg://celebgan.conf, or conf/ as the tests compose it)
        from celebgan.conf import CONFIG_DIR

        ours = ("pkg://celebgan.conf", f"file://{CONFIG_DIR}", str(CONFIG_DIR))
        if not any(element.path in ours for element in search_path.get_path()):
            return
        from celebgan.run.plugins import plugins

        for plugin in plugins():
            if plugin.conf_dir is not None:
                search_path.append(provider=f"celebgan-plugin-{plugin.name}", path=f"file://{plugin.conf_dir}")
