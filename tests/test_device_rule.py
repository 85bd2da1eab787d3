"""One rule decides what trainer.accelerator trains on (devices.training_device), and every
GPU-or-CPU decision reads it: the metrics and precision defaults, SyncBatchNorm, the GPU count."""
import pytest
import torch

from celebgan import devices
from celebgan.conf.resolvers import default_precision, trains_on_gpu
from celebgan.errors import UserError
from celebgan.run.guards import check_devices

# (machine, accelerator) -> (the device kind, trains on a GPU, default precision with bf16 support)
CASES = [
    ("cpu", "auto", "cpu", False, "32-true"),
    ("cpu", "cpu", "cpu", False, "32-true"),
    ("cpu", "gpu", "cuda", True, "32-true"),  # asked for a GPU that is not there: Lightning says so
    ("cuda", "auto", "cuda", True, "bf16-mixed"),
    ("cuda", "gpu", "cuda", True, "bf16-mixed"),
    ("cuda", "cpu", "cpu", False, "32-true"),
    ("mps", "auto", "mps", True, "32-true"),  # Apple's GPU: GPU-sized metrics, fp32
    ("mps", "gpu", "mps", True, "32-true"),
    ("cuda", "tpu", "tpu", False, "32-true"),
]


@pytest.fixture
def machine(monkeypatch):
    def make(kind: str):
        monkeypatch.setattr(devices, "best_device", lambda: torch.device(kind))
        monkeypatch.setattr(devices, "has_cuda", lambda: kind == "cuda")
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if kind == "cuda" else 0)
    return make


@pytest.mark.parametrize("kind, accelerator, on, gpu, precision", CASES)
def test_every_gpu_or_cpu_decision_follows_one_rule(machine, kind, accelerator, on, gpu, precision):
    machine(kind)
    assert devices.training_device(accelerator) == on
    assert trains_on_gpu(accelerator) == gpu
    assert default_precision(accelerator) == precision
    if on == "cuda" and kind == "cpu":  # one error, in celebgan's words, before Lightning's
        with pytest.raises(UserError, match="this machine has 0 visible GPU"):
            check_devices(accelerator, 1, sync_batchnorm=True)
    elif on == "cuda":
        check_devices(accelerator, 1, sync_batchnorm=True)  # SyncBatchNorm runs where CUDA trains
    else:
        with pytest.raises(UserError, match="sync_batchnorm=true needs GPUs"):
            check_devices(accelerator, 1, sync_batchnorm=True)


def test_the_gpu_count_is_checked_where_cuda_trains(machine):
    machine("cuda")
    with pytest.raises(UserError, match="trainer.devices=2 but this machine has 1 visible GPU"):
        check_devices("auto", 2)
    check_devices("cpu", 2)  # two CPU processes: no GPU count to meet
