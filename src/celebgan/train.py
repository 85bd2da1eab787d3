"""Train a GAN: `python -m celebgan.train [overrides]`, e.g. `model=spectral data=celeba32`.

train(cfg) holds the logic (tests call it with a composed config); main() is the Hydra wrapper.
"""
import logging

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf, open_dict

from celebgan import resume
from celebgan.checkpoint import AtomicCheckpointIO, RunConfig
from celebgan.errors import UserError, exit_on_user_error
from celebgan.guards import check_devices
from celebgan.hparams import FinalMetrics, log_hparams

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
            cfg.trainer, callbacks=[*callbacks, RunConfig(config=config), resume.RNGState(), FinalMetrics()],
            logger=logger, plugins=[AtomicCheckpointIO()], precision=precision,
        )
    except InstantiationException as err:
        if isinstance(err.__cause__, MisconfigurationException):  # e.g. devices this machine lacks
            raise UserError(f"The trainer config cannot run here: {err.__cause__}") from None
        raise
    if logger:
        log_hparams(logger, config)
    log.info("Run directory: %s", cfg.paths.output_dir)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error(log):
        train(cfg)


if __name__ == "__main__":
    main()
