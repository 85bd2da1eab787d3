"""Train a GAN: `python -m celebgan.train [overrides]`, e.g. `model=spectral data=celeba32`.

train(cfg) holds the logic (tests call it with a composed config); main() is the Hydra wrapper.
"""
import logging
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException, OverrideParseException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf, open_dict

from celebgan import resume
from celebgan.checkpoint import AtomicCheckpointIO, RunConfig
from celebgan.errors import UserError, exit_on_user_error
from celebgan.guards import check_devices
from celebgan.hparams import FinalMetrics, final_metrics, log_hparams

log = logging.getLogger(__name__)


def instantiate(node, **kwargs):
    """hydra.utils.instantiate, except that a UserError raised by a constructor stays a UserError
    (Hydra wraps it), so the command line can print its message alone."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def default_precision(accelerator: str) -> str:
    """trainer.precision=auto: bf16-mixed where it runs fast (a CUDA GPU with bf16), else 32-true.

    On CPUs without native bf16 (no AVX512-BF16/AMX) autocast to bf16 is emulated: a DCGAN-64
    step measured 8-25x slower than fp32 on the 2-core AMD EPYC this was developed on.
    """
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def group_choices() -> dict[str, str]:
    """Hydra's choice in each config group (model=high_lr, data=synthetic, ...); {} outside Hydra."""
    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def max_steps_kwargs(cfg: DictConfig, model) -> dict[str, int]:
    """trainer.max_steps counts training steps (real batches), the unit of the TensorBoard x-axis,
    of GAN.steps_done and of every step setting (instance_noise_steps, penalty intervals).
    Lightning's own max_steps counts optimizer steps, a D step and each G step, so
    trainer.max_steps=30 would otherwise train 15 batches; the Trainer gets the converted count."""
    steps = cfg.trainer.get("max_steps")
    if steps is None or steps < 0:  # -1, Lightning's default: no limit
        return {}
    optimizer_steps = model.optimizer_steps(steps)
    log.info("trainer.max_steps=%d: training stops after %d training steps (real batches): %d D steps and "
             "%d G steps (model.n_dis=%d), which Lightning counts as max_steps=%d optimizer steps",
             steps, steps, steps, steps // model.n_dis, model.n_dis, optimizer_steps)
    return {"max_steps": optimizer_steps}


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model on the configured data; returns the final logged metrics."""
    check_devices(cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("devices", 1),
                  cfg.trainer.get("sync_batchnorm", False))
    ckpt_path, original_run = resume.resolve(cfg.get("resume"), OmegaConf.to_container(cfg, resolve=True))
    if original_run is not None:  # continue in the run's own folder: one TensorBoard run, one last.ckpt
        log.info("Resuming %s; this invocation's own log stays in %s", ckpt_path, cfg.paths.output_dir)
        with open_dict(cfg):
            cfg.paths.output_dir = str(original_run)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # a missing or malformed dataset fails here, before any training
    model = instantiate(cfg.model)
    config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    precision = cfg.trainer.get("precision", "auto")
    if precision == "auto":
        precision = default_precision(str(cfg.trainer.get("accelerator", "auto")))
        log.info("trainer.precision=auto: training with %s", precision)
    try:
        trainer = hydra.utils.instantiate(
            cfg.trainer, callbacks=[*callbacks, RunConfig(config=config), resume.RNGState(),
                                    FinalMetrics(columns=final_metrics(config))],
            logger=logger, plugins=[AtomicCheckpointIO()], precision=precision, **max_steps_kwargs(cfg, model),
        )
    except InstantiationException as err:
        if isinstance(err.__cause__, MisconfigurationException):  # e.g. devices this machine lacks
            raise UserError(f"The trainer config cannot run here: {err.__cause__}") from None
        raise
    if logger:
        log_hparams(logger, config, group_choices())
    log.info("Run directory: %s", cfg.paths.output_dir)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@contextmanager
def removed_if_unused(run_dir: Path, log_name: str) -> Iterator[None]:
    """A command that fails before training wrote anything (a missing dataset, a bad setting) leaves
    no run folder behind: Hydra's copy of the config and the log are all it would hold, and the
    console showed both."""
    try:
        yield
    except BaseException:
        if run_dir.is_dir() and all(p.name in (".hydra", log_name) for p in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


# Keys that never name a sweep job's folder: where the data lives and what hardware a job runs on.
UNNAMED_KEYS = ("data.root", "paths.data_dir", "resume", "trainer.devices", "trainer.accelerator")
EXCLUDE_KEYS = "hydra.job.config.override_dirname.exclude_keys"


def sweep_folder_overrides(args: Sequence[str]) -> list[str]:
    """The Hydra override that names each job folder of a --multirun sweep by its swept keys alone
    (`3_data=celeba64,model=vanilla`): a key given one value on the command line is the same in every
    job, so it is left out of hydra.job.override_dirname, as are UNNAMED_KEYS. Hydra knows which keys
    were swept only in the launching process; as an override, the list reaches every job under any
    launcher (local, submitit). [] when the command is not a sweep or sets the list itself."""
    if not {"-m", "--multirun"} & set(args) or any(a.startswith(EXCLUDE_KEYS) for a in args):
        return []
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except OverrideParseException:
        return []  # Hydra reports the bad override itself
    fixed = {o.key_or_group for o in overrides if not o.is_sweep_override() and not o.is_hydra_override()}
    keys = sorted(fixed | set(UNNAMED_KEYS))
    return [f"{EXCLUDE_KEYS}=[{','.join(repr(k) for k in keys)}]"]


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    with exit_on_user_error(log), removed_if_unused(Path(hydra_cfg.runtime.output_dir), f"{hydra_cfg.job.name}.log"):
        train(cfg)


def main() -> None:
    sys.argv += sweep_folder_overrides(sys.argv[1:])  # read by Hydra's own command-line parser
    hydra_main()


if __name__ == "__main__":
    main()
