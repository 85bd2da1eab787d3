"""Which device `auto` means, for every command and the Python API: a CUDA GPU, else Apple's MPS,
else the CPU (the order of Lightning's trainer.accelerator=auto)."""
import torch

from celebgan.errors import UserError

CHOICES = "auto (a CUDA GPU, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps"


def best_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_device(name: str | torch.device = "auto", key: str = "device") -> torch.device:
    """`auto` -> best_device(); any other name (cpu, cuda, cuda:1, mps) as torch reads it, when
    this machine has that device; else one UserError naming the setting `key`, before any work."""
    if str(name) == "auto":
        return best_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # "Expected one of cpu, cuda, ipu, xpu, ... device type"
        raise UserError(f"{key}={name!r} is not a device: use {CHOICES}.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{key}={name} needs a CUDA GPU, and torch sees none on this machine (no GPU, no "
                            f"driver, or CUDA_VISIBLE_DEVICES hides them): use {key}=auto or {key}=cpu.")
        if device.index is not None and device.index >= count:
            raise UserError(f"{key}={name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}.")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{key}={name} needs Apple's MPS (a Mac with Apple silicon), which this machine lacks: "
                        f"use {key}=auto or {key}=cpu.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{key}={name!r} is not a device celebgan runs on: use {CHOICES}.")
    return device


def has_cuda() -> bool:
    """A CUDA GPU is here: what pinned memory, SyncBatchNorm and bf16 autocast need."""
    return torch.cuda.is_available()
