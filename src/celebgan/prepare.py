"""Decode a CelebA split once into a uint8 array that training memory-maps:

    python -m celebgan.prepare data=celeba64 [workers=N] [force=true] [data.key=value ...]

What a prepared split is and how it stays in step with its images: celebgan.data.prepared.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from celebgan.cli import command
from celebgan.errors import UserError

if TYPE_CHECKING:
    from celebgan.data.prepared import Prepared


def prepare_data(cfg: DictConfig) -> Prepared:
    """The command's work, from its composed config (conf/prepare.yaml)."""
    from celebgan.data.prepared import prepare  # torch: imported once the command runs, not for --help

    data = cfg.data
    if "root" not in data:
        raise UserError(f"data={data._target_} needs no preparing: only CelebA data (data=celeba64, "
                        "data=celeba32) is read from image files.")
    if not isinstance(cfg.force, bool):
        raise UserError(f"force={cfg.force!r} must be true or false.")
    return prepare(data.root, data.split, data.crop, data.img_size, data.prepared_dir,
                   workers=cfg.workers, force=cfg.force)


@command("prepare")
def main(cfg: DictConfig) -> None:
    from celebgan.devices import use_threads

    use_threads(cfg.threads)
    prepare_data(cfg)


if __name__ == "__main__":
    main()
