"""The `celebgan.*` resolvers of the configs: the values that depend on the machine a run starts on,
chosen where the config is composed rather than by the command that reads it."""
import sys

from omegaconf import OmegaConf

# torch is imported by the resolvers that need it, when a config is resolved: composing one (a
# command's --help, --cfg job, a mistake on its command line) stays as fast as Hydra is.


def trains_on_gpu(accelerator: str) -> bool:
    """trainer.accelerator trains on a GPU here (auto: whenever one is present)."""
    from celebgan.devices import training_device

    return training_device(accelerator) in ("cuda", "mps")


def gpu_or_cpu(accelerator: str, on_gpu, on_cpu):
    """`${celebgan.gpu_or_cpu:${trainer.accelerator},A,B}`: A when the run trains on a GPU, else B."""
    return on_gpu if trains_on_gpu(str(accelerator)) else on_cpu


def default_precision(accelerator: str) -> str:
    """trainer.precision's default: bf16-mixed where it runs fast (a CUDA GPU with bf16), else 32-true.

    On CPUs without native bf16 (no AVX512-BF16/AMX) autocast to bf16 is emulated: a DCGAN-64
    step measured 8-25x slower than fp32 on the 2-core AMD EPYC this was developed on.
    """
    import torch

    from celebgan.devices import has_cuda, training_device

    cuda = training_device(accelerator) == "cuda" and has_cuda()
    return "bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else "32-true"


def stdout_is_terminal() -> bool:
    """A progress bar redrawn in a file or a CI log is one long line of updates: there, EpochLog's
    line per epoch replaces it."""
    return sys.stdout.isatty()


def register() -> None:
    for name, resolver in (("gpu_or_cpu", gpu_or_cpu), ("precision", default_precision),
                           ("stdout_is_terminal", stdout_is_terminal)):
        OmegaConf.register_new_resolver(f"celebgan.{name}", resolver, replace=True)
