"""Decode a CelebA split once into a uint8 array that training memory-maps:

    python -m celebgan.prepare data=celeba64 [--workers N] [--force] [other Hydra overrides]

What a prepared split is and how it stays in step with its images: celebgan.data.prepared.
"""
import argparse
import logging

from hydra import compose, initialize_config_dir

from celebgan.conf import CONFIG_DIR
from celebgan.data.prepared import prepare
from celebgan.errors import UserError, exit_on_user_error, user_message

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Decode a CelebA split once into a memory-mappable uint8 array (see data.prepared_dir).",
        epilog="Other arguments are Hydra overrides, as for celebgan.train: data=celeba32 data.crop=face ...")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: one per usable core)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the prepared file is up to date")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    with exit_on_user_error(log):
        try:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                cfg = compose(config_name="config", overrides=overrides)
        except Exception as err:  # an unknown key, group option or a malformed override
            if (message := user_message(err)) is None:
                raise
            raise UserError(message) from None
        data = cfg.data
        if "root" not in data:
            raise UserError(f"data={data._target_} needs no preparing: only CelebA data (data=celeba64, "
                            "data=celeba32) is read from image files.")
        prepare(data.root, data.split, data.crop, data.img_size, data.prepared_dir,
                workers=args.workers, force=args.force)


if __name__ == "__main__":
    main()
