"""Rebuild a trained GAN, and the data it was trained on, from a checkpoint alone."""
import pickle
import zipfile
from pathlib import Path
from typing import Any

import hydra
import torch
from lightning import LightningDataModule

from celebgan.errors import UserError
from celebgan.module import GAN


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a celebgan training run, or one UserError that says what is wrong."""
    path = Path(path).expanduser()
    if not path.is_file():
        hint = " (a run keeps it at RUN_DIR/checkpoints/last.ckpt)" if path.is_dir() else ""
        raise UserError(f"Checkpoint not found: ckpt={str(path)!r} is not a file{hint}.")
    try:
        # weights_only: a checkpoint is data, never code to run.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        raise UserError(f"ckpt={str(path)!r} is not a readable PyTorch checkpoint ({type(err).__name__}). "
                        "Point ckpt at a checkpoints/*.ckpt file written by celebgan.train.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"ckpt={str(path)!r} is not a Lightning checkpoint (no state_dict). "
                        "Point ckpt at a checkpoints/*.ckpt file written by celebgan.train.")
    if "celebgan_config" not in ckpt:
        raise UserError(f"ckpt={str(path)!r} was not written by celebgan.train (it holds no celebgan_config), "
                        "so its model cannot be rebuilt. Use a checkpoint of a celebgan run.")
    return ckpt


def load_gan(path: str | Path, *, img_size: int | None = None) -> tuple[GAN, dict[str, Any]]:
    """(GAN in eval mode on the CPU, the run's resolved config) from a celebgan checkpoint.

    img_size: when given, a checkpoint trained at another size is refused.
    """
    ckpt = read_checkpoint(path)
    config = ckpt["celebgan_config"]
    model_cfg = config.get("model", {})
    if model_cfg.get("_target_") != f"{GAN.__module__}.{GAN.__qualname__}":
        raise UserError(f"ckpt={str(path)!r} holds a model of type {model_cfg.get('_target_')!r}, "
                        f"not celebgan's GAN; this command needs a GAN checkpoint.")
    trained_size = config["data"]["img_size"]
    if img_size is not None and trained_size != img_size:
        raise UserError(f"ckpt={str(path)!r} was trained on {trained_size}px images, but {img_size}px were asked "
                        f"for. Use a {img_size}px checkpoint or drop the image size setting.")
    model = hydra.utils.instantiate(model_cfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        # A config edited after training, or weights of another architecture under the same config.
        first = str(err).splitlines()[1:2] or [str(err)]
        raise UserError(f"The weights in ckpt={str(path)!r} do not fit the model its config describes "
                        f"({first[0].strip()}). The checkpoint is damaged or from another model version.") from None
    return model.eval(), config


def build_datamodule(config: dict[str, Any], **overrides: Any) -> LightningDataModule:
    """The data module of a run's config with some settings replaced (e.g. split, flip=False)."""
    data_cfg = {**config["data"], **{k: v for k, v in overrides.items() if v is not None}}
    return hydra.utils.instantiate(data_cfg)
