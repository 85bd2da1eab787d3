"""Callbacks: progress grids from the fixed latents, and the run's config inside checkpoints."""
import os
from pathlib import Path

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torchvision.utils import make_grid, save_image

from celebgan.errors import UserError


def atomic_path(path: str | os.PathLike) -> Path:
    """A temporary sibling of `path`: write there, then os.replace() it into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


class SampleGrid(Callback):
    """Each epoch: a grid of the sampler's images from the module's fixed latents, written to
    TensorBoard (tag `samples`) and as `dirpath/epoch_NNNN.png` (rank 0 only)."""

    def __init__(self, *, dirpath: str, every_n_epochs: int = 1, nrow: int = 8):
        self.dirpath, self.every_n_epochs, self.nrow = Path(dirpath), every_n_epochs, nrow

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        images = pl_module.sample(pl_module.fixed_z)  # (N, 3, S, S) in [-1, 1]
        grid = make_grid(images.cpu(), nrow=self.nrow, normalize=True, value_range=(-1, 1))
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"epoch_{epoch:04d}.png"
        tmp = atomic_path(path)
        save_image(grid, tmp, format="png")
        os.replace(tmp, path)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, global_step=epoch)


class RunConfig(Callback):
    """Stores the run's resolved config in every checkpoint, so a checkpoint alone rebuilds its model."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint["celebgan_config"] = self.config


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary name and renames it into place, so a crash or kill
    mid-write leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = atomic_path(path)
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except OSError as err:  # a full disk, a quota, a vanished mount: the old file is intact
            raise UserError(f"Could not write checkpoint {path}: {err}. The previous checkpoint there, "
                            "if any, is intact; free space (or set callbacks.model_checkpoint.dirpath) "
                            "and resume from it with resume=auto.") from err
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = True):
        # Tensors and plain containers only: a checkpoint from an untrusted place cannot run code.
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
