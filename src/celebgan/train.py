"""Train a GAN: `python -m celebgan.train [overrides]`, e.g. `model=spectral data=celeba32`.

train(cfg) holds the logic (tests call it with a composed config); main() is the Hydra wrapper.
"""
import logging
import sys

import hydra
import lightning as L
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from celebgan.callbacks import AtomicCheckpointIO, RunConfig
from celebgan.errors import UserError
from celebgan.hparams import log_final_metrics, log_hparams

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


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model on the configured data; returns the final logged metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # a missing or malformed dataset fails here, before any training
    model = instantiate(cfg.model)
    config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = instantiate(
        cfg.trainer, callbacks=[*callbacks, RunConfig(config)], logger=logger, plugins=[AtomicCheckpointIO()]
    )
    if logger:
        log_hparams(logger, config)
    log.info("Run directory: %s", cfg.paths.output_dir)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("resume"))
    if logger:
        log_final_metrics(logger, trainer)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except UserError as err:
        log.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
