"""celebgan: DCGAN-family face generators trained with PyTorch Lightning and Hydra.

The commands are celebgan-train, -sample, -evaluate, -prepare and -plot (or python -m celebgan.*);
from Python, a trained generator is one call away:

    import celebgan
    G = celebgan.load_generator("outputs/runs/RUN/checkpoints/last.ckpt")
    images = G.sample(16, seed=0)   # (16, 3, S, S) in [0, 1]
"""
from importlib.metadata import PackageNotFoundError, version

from celebgan.conf import CONFIG_DIR
from celebgan.errors import UserError

try:
    __version__ = version("celebgan")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"


__all__ = ["CONFIG_DIR", "TrainedGenerator", "UserError", "load_generator", "__version__"]


def __getattr__(name: str):
    # The Python API imports torch: loaded on first use, so that `import celebgan` and every
    # command's --help stay fast.
    if name in ("TrainedGenerator", "load_generator"):
        from celebgan import trained

        return getattr(trained, name)
    raise AttributeError(f"module 'celebgan' has no attribute {name!r}")
