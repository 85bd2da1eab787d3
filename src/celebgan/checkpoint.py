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


def load_checkpoint(path: str | Path, *, hint: str = "") -> dict[str, Any]:
    """torch.load with weights_only=True: tensors and plain containers only, so a checkpoint from an
    untrusted place cannot run code while it loads. Every bad file is one UserError; `hint` ends
    the not-found message (what to pass instead)."""
    path = Path(path).expanduser()
    if not path.is_file():
        where = " (a run keeps it at RUN_DIR/checkpoints/last.ckpt)" if path.is_dir() else ""
        raise UserError(f"Checkpoint not found: {str(path)!r} is not a file{where}.{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):  # not a pickle at all
            raise UserError(f"{str(path)!r} is not a readable PyTorch checkpoint ({err}).") from None
        raise UserError(
            f"Refusing to load {path}: it holds objects other than tensors and plain containers, "
            f"which could run code on load ({str(err).splitlines()[0]}). "
            "Only checkpoints written by celebgan load; do not trust this file.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise UserError(f"{str(path)!r} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                        f"{str(err).splitlines()[0]}") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a celebgan training run, or one UserError that says what is wrong."""
    ckpt = load_checkpoint(path, hint=" Point ckpt at a checkpoints/*.ckpt file written by celebgan.train.")
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
