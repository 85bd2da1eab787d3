"""Which device `auto` means, for every command and the Python API: a CUDA GPU, else Apple's MPS,
else the CPU (the order of Lightning's trainer.accelerator=auto)."""
import torch


def best_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """`auto` -> best_device(); any other name (cpu, cuda, cuda:1, mps) as torch reads it."""
    return best_device() if str(name) == "auto" else torch.device(name)


def has_cuda() -> bool:
    """A CUDA GPU is here: what pinned memory, SyncBatchNorm and bf16 autocast need."""
    return torch.cuda.is_available()
