"""Every model x data combination composes, instantiates and sizes its networks from data.img_size;
the presets differ from vanilla by their own keys only; the paper's defaults."""

import hydra
import pytest
import torch

from celebgan.conf import CONFIG_DIR
from celebgan.data.modules import CelebADataModule, SyntheticDataModule
from celebgan.gan.module import GAN, attribute_kwargs
from conftest import compose_config

MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))


def test_presets_exist():
    assert {"vanilla", "label_smoothing", "spectral"} <= set(MODELS)
    assert {"celeba64", "celeba32", "synthetic"} <= set(DATA)


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_every_combination_composes_and_instantiates(tmp_path, model, data):
    cfg = compose_config([f"model={model}", f"data={data}"], tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    # A conditional preset is built for its data's attributes (celebgan.train); two names stand in.
    gan = hydra.utils.instantiate(cfg.model, **attribute_kwargs(cfg.model, ["Smiling", "Eyeglasses"]))
    assert isinstance(dm, CelebADataModule if data.startswith("celeba") else SyntheticDataModule)
    assert isinstance(gan, GAN)
    size = cfg.data.img_size
    assert size == {"celeba64": 64, "celeba32": 32, "synthetic": 64}[data]
    labels = gan.draw_labels(2) if gan.conditional else None
    assert gan.conditional == (model in ("projection", "acgan"))
    with torch.no_grad():
        x = gan.generator(torch.randn(2, gan.generator.nz), labels)
        assert x.shape == (2, 3, size, size)
        gan.discriminator.eval()
        assert gan.d_logits(x, labels).shape == (2,)


def flat(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        out.update(flat(value, f"{prefix}{key}.") if hasattr(value, "items") else {f"{prefix}{key}": value})
    return out


HINGE = {"d_loss._target_": "celebgan.gan.losses.d_hinge", "d_loss.real_label": None,
         "g_loss._target_": "celebgan.gan.losses.g_hinge"}
R1 = {"penalties.r1._target_": "celebgan.gan.penalties.R1", "penalties.r1.gamma": 0.1, "penalties.r1.every": 16}
# What each preset's file promises, key by key: every other key is vanilla's.
PRESETS = {
    "vanilla": {},
    "label_smoothing": {"d_loss.real_label": 0.9},
    "hinge": HINGE,
    "spectral": {"discriminator.spectral_norm": True, "discriminator.batch_norm": False},
    "r1": {**R1, "discriminator.batch_norm": False},
    "diffaugment": {"augment": ["color", "translation", "cutout"]},
    "ttur": {"g_optimizer.lr": 1e-4, "d_optimizer.lr": 4e-4},  # D 4x faster than G
    "high_lr": {"g_optimizer.lr": 1e-3, "d_optimizer.lr": 1e-3},
    "minimax": {"g_loss._target_": "celebgan.gan.losses.g_minimax"},
    "lsgan": {"d_loss._target_": "celebgan.gan.losses.d_lsgan", "d_loss.real_label": None,
              "g_loss._target_": "celebgan.gan.losses.g_lsgan"},
    "rpgan": {"d_loss._target_": "celebgan.gan.losses.d_rpgan", "d_loss.real_label": None,
              "g_loss._target_": "celebgan.gan.losses.g_rpgan", **R1, "penalties.r2._target_": "celebgan.gan.penalties.R2",
              "penalties.r2.gamma": 0.1, "penalties.r2.every": 16, "discriminator.batch_norm": False},
    "wgan_gp": {"d_loss._target_": "celebgan.gan.losses.d_wgan", "d_loss.real_label": None,
                "g_loss._target_": "celebgan.gan.losses.g_wgan", "penalties.gp._target_": "celebgan.gan.penalties.GradientPenalty",
                "penalties.gp.weight": 10.0, "penalties.gp.every": 1, "n_dis": 5, "discriminator.batch_norm": False,
                "g_optimizer.lr": 1e-4, "d_optimizer.lr": 1e-4, "g_optimizer.betas": [0.0, 0.9],
                "d_optimizer.betas": [0.0, 0.9]},
    "regularized": {"d_loss.real_label": 0.9, "instance_noise": 0.1, "instance_noise_steps": 5000, "generator.nz": 128,
                    "discriminator.spectral_norm": True, "discriminator.batch_norm": False, "discriminator.dropout": 0.2,
                    "g_optimizer.lr": 1e-4, "d_optimizer.lr": 4e-4},
}
HIGH_LR = PRESETS["high_lr"]
CONDITIONAL_G = {"generator._target_": "celebgan.gan.networks.ConditionalGenerator",
                 "generator.embed_dim": 32, "generator.embed_std": 0.02}
PRESETS["projection"] = {**HIGH_LR, **CONDITIONAL_G, "generator.conditional_bn": True,
                         "discriminator._target_": "celebgan.gan.networks.ProjectionDiscriminator",
                         "discriminator.label_coding": "signed"}
PRESETS["acgan"] = {**HIGH_LR, **CONDITIONAL_G, "generator.conditional_bn": False, "aux_weight": 1.0,
                    "discriminator._target_": "celebgan.gan.networks.ACGANDiscriminator"}


def test_every_preset_is_in_the_table():
    assert set(PRESETS) == set(MODELS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_is_vanilla_plus_what_its_file_sets(tmp_path, preset):
    vanilla = flat(compose_config(["model=vanilla"], tmp_path).model)
    variant = flat(compose_config([f"model={preset}"], tmp_path).model)
    changed = {k: variant.get(k) for k in vanilla.keys() | variant.keys() if vanilla.get(k) != variant.get(k)}
    assert changed == PRESETS[preset]


def test_paper_defaults(tmp_path):
    cfg = compose_config([], tmp_path)
    gan = hydra.utils.instantiate(cfg.model)
    g_opt, d_opt = gan.configure_optimizers()
    for opt in (g_opt, d_opt):
        assert isinstance(opt, torch.optim.Adam)
        assert opt.defaults["lr"] == 2e-4 and tuple(opt.defaults["betas"]) == (0.5, 0.999)
    assert cfg.data.batch_size == 128 and cfg.model.generator.nz == 100
    assert {id(p) for p in g_opt.param_groups[0]["params"]} == {id(p) for p in gan.generator.parameters()}


def test_integer_betas_from_a_command_line_build_adam(tmp_path):
    cfg = compose_config(["model.g_optimizer.betas.0=0", "model.d_optimizer.betas=[0,0.99]"], tmp_path)
    g_opt, d_opt = hydra.utils.instantiate(cfg.model).configure_optimizers()
    assert tuple(g_opt.defaults["betas"]) == (0.0, 0.999) and tuple(d_opt.defaults["betas"]) == (0.0, 0.99)
    assert all(isinstance(b, float) for opt in (g_opt, d_opt) for b in opt.defaults["betas"])


def test_machine_dependent_defaults_resolve_in_the_config(tmp_path, monkeypatch):
    # metrics=auto measures on a GPU only; trainer.precision's default is bf16-mixed on a CUDA GPU with bf16.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = compose_config(["trainer.accelerator=auto"], tmp_path)
    assert cpu.metrics.every_n_epochs == 0 and cpu.trainer.precision == "32-true"
    assert compose_config(["trainer.accelerator=gpu"], tmp_path).metrics.every_n_epochs == 1
    assert compose_config(["metrics=small"], tmp_path).metrics.every_n_epochs == 1  # a choice, not the machine's
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = compose_config(["trainer.accelerator=auto"], tmp_path)
    assert gpu.metrics.every_n_epochs == 1 and gpu.trainer.precision == "bf16-mixed"
    forced = compose_config(["trainer.accelerator=cpu"], tmp_path)
    assert forced.metrics.every_n_epochs == 0 and forced.trainer.precision == "32-true"


# --- one source for each default ------------------------------------------------------------------

def shipped_targets():
    """(file, dotted key, node) of every node with a `_target_` in the shipped conf/ files."""
    from omegaconf import OmegaConf

    def walk(node, key):
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                yield key, node
            for k, v in node.items():
                yield from walk(v, f"{key}.{k}" if key else str(k))

    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for key, node in walk(tree, ""):
            yield str(path.relative_to(CONFIG_DIR)), key, node


def own_defaults(target) -> dict:
    """The defaults celebgan's own code gives the callable's keyword arguments, a subclass's before
    its base's (what **kwargs hands on); a library's own (Lightning's, torch's) are not ours to match."""
    import inspect

    callables = [c.__init__ for c in target.__mro__] if inspect.isclass(target) else [target]
    defaults: dict = {}
    for fn in callables:
        if not getattr(fn, "__module__", "").startswith("celebgan"):
            continue
        for name, p in inspect.signature(fn).parameters.items():
            if p.default is not inspect.Parameter.empty:
                defaults.setdefault(name, p.default)
    return defaults


def test_a_constructor_default_agrees_with_every_yaml_that_sets_it():
    """The YAML is the source of what the commands build: a default in code that says otherwise is
    one that drifted (R1's lazy interval once read 1 there and 16 in conf/)."""
    from hydra.utils import get_object

    # (target, name) -> the files' lines that disagree, and whether any file agrees. Where presets
    # choose differently for one target (projection's G reads labels in its BatchNorms, AC-GAN's does
    # not), the default must be one of their choices, stated in that file too.
    disagree: dict = {}
    agree: set = set()
    for file, key, node in shipped_targets():
        defaults = own_defaults(get_object(node["_target_"]))
        for name, value in node.items():
            if name.startswith("_") or name not in defaults or isinstance(value, (dict, list)):
                continue
            if isinstance(value, str) and "${" in value:  # decided at run time (a resolver, another key)
                continue
            default = defaults[name]
            if default != value and not (isinstance(default, tuple) and list(default) == value):
                disagree.setdefault((node["_target_"], name), []).append(
                    f"{file} {key or '(top)'}.{name}: {value!r} there, {default!r} in {node['_target_']}")
            else:
                agree.add((node["_target_"], name))
    drifted = [line for where, lines in disagree.items() if where not in agree for line in lines]
    assert not drifted, "\n".join(drifted)



def test_no_shipped_config_sets_hydra_mode():
    # tests/cli_runner.py answers Hydra.get_mode's question itself (None, tests/composing.py) where
    # the command line does not name hydra.mode: exact only while no config of the package sets it.
    import yaml

    setting = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        node = yaml.safe_load(path.read_text()) or {}
        package = path.relative_to(CONFIG_DIR).parts
        if package[0] == "hydra" and len(package) == 2:  # conf/hydra/X.yaml is the hydra node itself
            hydra_node = node
        else:
            hydra_node = node.get("hydra", {}) if isinstance(node, dict) else {}
        if isinstance(hydra_node, dict) and "mode" in hydra_node:
            setting.append(str(path.relative_to(CONFIG_DIR)))
    assert len(list(CONFIG_DIR.rglob("*.yaml"))) > 20 and not setting, setting
