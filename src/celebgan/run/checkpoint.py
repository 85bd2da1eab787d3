"""The checkpoint contract: what celebgan writes into a checkpoint and how it reads one back.

Lightning writes each checkpoint through AtomicCheckpointIO, and RunConfig adds the run's resolved
config under CONFIG_KEY, so a checkpoint alone rebuilds its model and data. Everything that reads
a checkpoint goes through this module, by one public door per use: `read_checkpoint` for training
(resume: the stored run config and loop state), `load_gan` for sampling and evaluating (the GAN and
its config), and celebgan.load_generator, the Python API, on top of load_gan. Each checks the stored
config as data (trust.py) before anything reads it.
"""
import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import hydra
import torch
from lightning import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import Dataset, Subset

from celebgan.data.batches import seeded_subset
from celebgan.errors import UserError
from celebgan.io import atomic_write
from celebgan.gan.labels import LabelTable
from celebgan.gan.module import GAN, TABLE_KEY, attribute_kwargs
from celebgan.run.trust import UntrustedCheckpoint, check_stored_config, group_targets, is_allowed, too_deep

log = logging.getLogger(__name__)

CONFIG_KEY = "celebgan_config"
# Ends the message of a checkpoint that cannot be used: what to pass instead.
CKPT_HINT = " Point ckpt at a checkpoints/*.ckpt file written by celebgan.train."
RESUME_HINT = (" Pass the path of a .ckpt file (RUN_DIR/checkpoints/last.ckpt) "
               "or resume=auto for the newest run of this config.")


class RunConfig(Callback):
    """Stores the run's resolved config in every checkpoint, so a checkpoint alone rebuilds its model."""

    def __init__(self, *, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary name in its own folder and renames it into place, so
    a crash or kill mid-write leaves the previous checkpoint intact. (Lightning's own writer
    stages it in memory and then in the system's temporary folder, which also needs the space.)"""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        hint = (" The previous checkpoint there, if any, is intact; free space (or set "
                "callbacks.model_checkpoint.dirpath) and resume from it with resume=auto.")
        with atomic_write(path, hint=hint) as tmp:
            try:
                self.write_file(checkpoint, tmp)
            except RuntimeError as err:
                if not is_failed_write(err):
                    raise
                raise failed_write(err, tmp) from err

    @staticmethod
    def write_file(checkpoint: dict, path: Path) -> None:
        torch.save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = True):
        # Tensors and plain containers only: a checkpoint from an untrusted place cannot run code.
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


# What torch.save's C++ writer raises when the file system refuses a write (a full disk, a quota):
# a RuntimeError, not the OSError that atomic_write turns into its message.
WRITE_FAILURES = ("iostream error", "unexpected pos", "file write failed")


def is_failed_write(err: BaseException) -> bool:
    while err is not None:  # torch raises "unexpected pos" while handling "iostream error"
        if isinstance(err, RuntimeError) and any(s in str(err) for s in WRITE_FAILURES):
            return True
        err = err.__context__
    return False


def failed_write(err: RuntimeError, path: Path) -> OSError:
    """The OSError that torch.save's failed write stands for; torch keeps no errno, so the free space
    of the folder says which it likely was."""
    free = shutil.disk_usage(path.parent).free
    return OSError(f"the write stopped with {free / 1e6:.1f} MB free on that disk (torch.save: {str(err).strip()})")


def _load_checkpoint(path: str | Path, *, hint: str = "") -> dict[str, Any]:
    """torch.load with weights_only=True: tensors and plain containers only, so a checkpoint from an
    untrusted place cannot run code while it loads. Every bad file is one UserError; `hint` ends
    the not-found message (what to pass instead)."""
    path = Path(path).expanduser()
    if not path.is_file():
        where = " (a run keeps it at RUN_DIR/checkpoints/last.ckpt)" if path.is_dir() else ""
        raise UserError(f"Checkpoint not found: {str(path)!r} is not a file{where}.{hint}")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise UserError(f"Could not read {str(path)!r}: {err.strerror or err}.") from None
    if head != b"PK\x03\x04":  # torch.save writes a zip archive; anything else is no checkpoint at all
        raise UserError(f"{str(path)!r} is not a PyTorch checkpoint: torch.save writes a zip archive, and this "
                        f"file is not one (it begins {head!r}).{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):  # not a pickle at all
            raise UserError(f"{str(path)!r} is not a readable PyTorch checkpoint ({err}).") from None
        raise UntrustedCheckpoint(
            f"Refusing to load {path}: it holds objects other than tensors and plain containers, "
            f"which could run code on load ({str(err).splitlines()[0]}). "
            "Only checkpoints written by celebgan load; do not trust this file.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise UserError(f"{str(path)!r} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                        f"{str(err).splitlines()[0]}") from None


def read_checkpoint(path: str | Path, *, arg: str = "ckpt", hint: str = CKPT_HINT) -> dict[str, Any]:
    """The checkpoint dict of a celebgan training run, its run config under CONFIG_KEY, or one
    UserError that says what is wrong. `arg` names the setting that gave the path (ckpt, resume) in
    the messages.

    Its stored run config is checked as data here, before anything reads it: plain values only,
    and no `_target_` in its model or data that celebgan's own configs do not name (trust.py)."""
    ckpt = _load_checkpoint(path, hint=hint)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"{arg}={str(path)!r} is not a Lightning checkpoint (no state_dict).{hint}")
    if CONFIG_KEY not in ckpt:
        raise UserError(f"{arg}={str(path)!r} was not written by celebgan.train (it holds no {CONFIG_KEY}), "
                        "so its model cannot be rebuilt. Use a checkpoint of a celebgan run.")
    source = f"{arg}={str(path)!r}"
    if too_deep(ckpt[CONFIG_KEY], CONFIG_KEY) is not None:  # before anything below recurses into it
        check_stored_config(ckpt[CONFIG_KEY], key=CONFIG_KEY, source=source)
    ckpt[CONFIG_KEY] = upgrade_config(ckpt[CONFIG_KEY])
    check_stored_config(ckpt[CONFIG_KEY], key=CONFIG_KEY, source=source)
    return ckpt


def as_given(path: str | Path) -> Path:
    """`path` made absolute as written: a link is not followed, so RUN/checkpoints/last.ckpt names
    RUN also where last.ckpt links to a file of another folder."""
    return Path(os.path.abspath(Path(path).expanduser()))


def run_dir(path: str | Path) -> Path | None:
    """The run folder of a checkpoint: RUN for RUN/checkpoints/X.ckpt (as given: the folder the path
    names, not that of a link's target), None for one kept elsewhere."""
    path = as_given(path)
    return path.parents[1] if path.parent.name == "checkpoints" else None


# Where each module lived before the package was split into wings (gan/, data/, metrics/, run/):
# a checkpoint written then names its classes by these paths. A fixed table of strings, applied to
# `_target_` values before they are checked against the allow-list: it renames, it never adds code.
FORMER_MODULES = {
    "celebgan.module.": "celebgan.gan.module.", "celebgan.networks.": "celebgan.gan.networks.",
    "celebgan.losses.": "celebgan.gan.losses.", "celebgan.penalties.": "celebgan.gan.penalties.",
    "celebgan.data.": "celebgan.data.modules.",
}


def _renamed_targets(tree: Any) -> Any:
    if isinstance(tree, dict):
        renamed = {k: _renamed_targets(v) for k, v in tree.items()}
        target = tree.get("_target_")
        if isinstance(target, str):
            for old, new in FORMER_MODULES.items():
                if target.startswith(old) and target.count(".") == old.count("."):  # celebgan.data.X only
                    renamed["_target_"] = new + target[len(old):]
        return renamed
    if isinstance(tree, list):
        return [_renamed_targets(v) for v in tree]
    return tree


def upgrade_config(config: Any) -> Any:
    """A checkpoint's stored run config in today's shape, as values: class paths from before the
    wings (FORMER_MODULES), and the model of a checkpoint written before objectives became config,
    which names them `objective` (bce | hinge) with a `real_label` where today's config holds the
    loss functions themselves (`d_loss` / `g_loss`, conf/model/loss/). The result is checked like
    any stored config; anything else is returned as is."""
    if not isinstance(config, dict):
        return config
    config = _renamed_targets(config)
    model_cfg = config.get("model")
    if not isinstance(model_cfg, dict) or "objective" not in model_cfg:
        return config
    upgraded = {k: v for k, v in model_cfg.items() if k not in ("objective", "real_label")}
    if model_cfg["objective"] == "hinge":
        d_loss = {"_target_": "celebgan.gan.losses.d_hinge", "_partial_": True}
        g_loss = {"_target_": "celebgan.gan.losses.g_hinge", "_partial_": True}
    else:
        d_loss = {"_target_": "celebgan.gan.losses.d_bce", "_partial_": True,
                  "real_label": model_cfg.get("real_label", 1.0)}
        g_loss = {"_target_": "celebgan.gan.losses.g_nonsaturating", "_partial_": True}
    return {**config, "model": {**upgraded, "d_loss": d_loss, "g_loss": g_loss}}


def stored_attr_names(ckpt: dict[str, Any], path: str | Path) -> list[str]:
    """The attributes a conditional GAN was trained on, from its checkpoint's hyperparameters, read as
    values: a list of names ([] for an unconditional GAN)."""
    names = (ckpt.get("hyper_parameters") or {}).get("attr_names", [])
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise UserError(f"ckpt={str(path)!r}: its attr_names hyperparameter is not a list of attribute names "
                        f"({names!r}). The checkpoint is damaged or was not written by celebgan.train.")
    return list(names)


def load_gan(path: str | Path, *, img_size: int | None = None) -> tuple[GAN, dict[str, Any]]:
    """(GAN in eval mode on the CPU, the run's resolved config) from a celebgan checkpoint.

    img_size: when given, a checkpoint trained at another size is refused.
    """
    ckpt = read_checkpoint(path)
    config = ckpt[CONFIG_KEY]
    model_cfg = config.get("model", {})
    if model_cfg.get("_target_") != f"{GAN.__module__}.{GAN.__qualname__}":
        raise UserError(f"ckpt={str(path)!r} holds a model of type {model_cfg.get('_target_')!r}, "
                        f"not celebgan's GAN; this command needs a GAN checkpoint.")
    trained_size = config["data"]["img_size"]
    if img_size is not None and trained_size != img_size:
        raise UserError(f"ckpt={str(path)!r} was trained on {trained_size}px images, but {img_size}px were asked "
                        f"for. Use a {img_size}px checkpoint or drop the image size setting.")
    model = hydra.utils.instantiate(model_cfg, **attribute_kwargs(model_cfg, stored_attr_names(ckpt, path)))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        # A config edited after training, or weights of another architecture under the same config.
        first = str(err).splitlines()[1:2] or [str(err)]
        raise UserError(f"The weights in ckpt={str(path)!r} do not fit the model its config describes "
                        f"({first[0].strip()}). The checkpoint is damaged or from another model version.") from None
    if model.conditional:
        if ckpt.get(TABLE_KEY) is not None:
            model.label_table = LabelTable.from_plain(ckpt[TABLE_KEY], len(model.attr_names), f"ckpt={str(path)!r}")
        else:
            log.info("ckpt=%s keeps no label table (written before celebgan kept one): the attributes a request "
                     "does not name are drawn each from its training frequency alone.", path)
    return model.eval(), config


def build_datamodule(config: dict[str, Any], **overrides: Any) -> LightningDataModule:
    """The data module of a run's config (read from a checkpoint) with some settings replaced (e.g.
    split, flip=False), for reading real images: it never writes a prepared file."""
    data_cfg = {**config["data"], **{k: v for k, v in overrides.items() if v is not None}}
    if not is_allowed(data_cfg.get("_target_"), group_targets("data")):
        raise UserError(f"The run's data config names {data_cfg.get('_target_')!r}, which is not one of "
                        f"celebgan's data modules ({', '.join(sorted(group_targets('data')))}) or an installed plugin's, "
                        "nor defined in a module this command trusts (trust=[...], CELEBGAN_TRUST).")
    if "cache_dir" in data_cfg:  # reading a run's images writes nothing where its stored config points
        data_cfg["cache_dir"] = None
    if data_cfg.get("prepared") is True:
        # prepared=true would decode the data set into a new file under the stored prepared_dir,
        # wherever that points. Sampling and evaluating only read: a matching prepared file is still
        # used (auto), none is built.
        data_cfg["prepared"] = "auto"
    return hydra.utils.instantiate(data_cfg)


def real_subset(config: dict[str, Any], split: str, n: int, seed: int, *,
                root: str | None = None) -> tuple[Dataset, list[str]]:
    """(at most n real images of one split of a run's data, unflipped, as (image, attributes) pairs;
    the names of those attributes: every one the data has, whatever data.attributes chose). A split
    of more than n images gives a seeded random subset of n, the same for a seed on every machine; a rendered data set renders only n (draws of one distribution)."""
    overrides: dict[str, Any] = {"split": split, "flip": False, "num_workers": 0, "batch_size": 1, "root": root}
    if "num_images" in config["data"]:
        overrides["num_images"] = n
    datamodule = build_datamodule(config, **overrides)
    dataset = datamodule.eval_dataset(split)
    if len(dataset) > n:
        dataset = Subset(dataset, seeded_subset(len(dataset), n, seed).tolist())
    return dataset, list(datamodule.data_attr_names or [])
