"""Which device `auto` means, for every command and the Python API: a CUDA GPU, else Apple's MPS,
else the CPU (the order of Lightning's trainer.accelerator=auto)."""
import math
import os
import time
from pathlib import Path

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


def training_device(accelerator: str) -> str:
    """The kind of device `trainer.accelerator` trains on here: "cuda", "mps" or "cpu" (another
    accelerator's name, e.g. tpu, as given). The one rule behind every GPU-or-CPU decision: the
    metrics and precision defaults (conf/resolvers.py), SyncBatchNorm and the GPU count
    (run/guards.py). auto and gpu take a CUDA GPU, else Apple's MPS, as Lightning does; auto falls
    back to the CPU, gpu on a machine without one stays "cuda" (Lightning refuses it, in its words)."""
    accelerator = str(accelerator)
    if accelerator not in ("auto", "gpu"):
        return accelerator
    kind = best_device().type
    return "cuda" if kind == "cpu" and accelerator == "gpu" else kind


def has_cuda() -> bool:
    """A CUDA GPU is here: what pinned memory, SyncBatchNorm and bf16 autocast need."""
    return torch.cuda.is_available()


# ------------------------------------------------------------------------------------------------
# CPU threads. On a shared machine every intra-op thread beyond the free cores waits for one:
# measured on a 2-core VM with three other busy processes, the demo's training step ran at about
# 65 img/s with 2 threads and 240 with 1 (540 and 880 idle). So a command counts the CPUs this
# process may use and how many of them are busy when it starts, and takes the free ones.
def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (a
    container's or a scheduler's limit), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.floor(quota)) if quota else cpus)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time the cgroup allows (cgroup v2 cpu.max, or v1 cfs quota / period); None: no limit."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def busy_cpus(seconds: float = 0.25, stat: Path = Path("/proc/stat")) -> float | None:
    """How many CPUs of the machine other processes kept busy over `seconds` (this one sleeps
    meanwhile); None where /proc/stat cannot be read (not Linux). The one-minute load average
    would lag a job that started seconds ago."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in stat.read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    return (os.cpu_count() or 1) * (elapsed - (idle1 - idle0)) / elapsed if elapsed > 0 else None


def choose_threads(setting: int | str = "auto", processes: int = 1) -> tuple[int, str]:
    """(intra-op threads for each of `processes` processes, the reason in words).

    setting: a whole number >= 1 is taken as it is; auto takes OMP_NUM_THREADS where the user set
    it, else the usable CPUs that are free now, shared between the processes (DDP ranks on a CPU).
    """
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise UserError(f"threads={setting!r} must be auto or a whole number >= 1 (CPU threads per process).")
        return setting, f"threads={setting} (set in the config)"
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) >= 1:
        return int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS (set in the environment)"
    cpus, busy = usable_cpus(), busy_cpus()
    free = cpus if busy is None else min(cpus, max(1, round((os.cpu_count() or cpus) - busy)))
    threads = max(1, free // max(1, processes))
    share = f" x {processes} processes" if processes > 1 else ""
    load = "" if busy is None else f", {busy:.1f} busy with other work"
    return threads, f"{threads}{share} of {cpus} usable CPUs{load}; threads=N overrides"


def use_threads(setting: int | str = "auto", processes: int = 1) -> int:
    """Sets torch's intra-op threads as choose_threads says, and OMP_NUM_THREADS for the processes
    this one starts (DDP ranks, data-loader workers read it when torch starts there); logs one line."""
    import logging

    threads, reason = choose_threads(setting, processes)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    logging.getLogger("celebgan").info("CPU threads: %s", reason if reason[0].isdigit() else f"{threads}, from {reason}")
    return threads
