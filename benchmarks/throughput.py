"""Throughput: JPEG-folder loader vs prepared loader, and celebgan's training step vs a plain loop.

    python benchmarks/throughput.py [--quick]      (make bench; make bench ARGS=--quick)

Each row runs in its own process, so its peak memory is its own. Rows, side by side in one run:
  data      images/s of a torchvision ImageFolder loader (PIL, the usual transforms, num_workers =
            cores) vs celebgan's prepared loader (uint8 slices, conversion and flips as whole
            batches on the training device), on 178x218 JPEGs generated here.
  scale     epoch time of the prepared loader vs dataset size.
  step      images/s of celebgan's training step (Lightning, EMA, logging) vs a plain PyTorch loop
            with the same DCGAN-64 networks, batch size, synthetic data and precision.
  threads   images/s of the demo's training step (32px, half widths, batch 32) with 1 thread, all
            cores, and the count celebgan's threads=auto picks, idle and loaded: loaded = cores + 1
            busy processes started by the benchmark itself beside the row (a shared machine).
  gpu       (only with CUDA) celebgan at 64px, batch 128, prepared data on the device, bf16, compiled,
            vs the plain loop fed by the JPEG loader; TFLOP/s beside the device's peak; epoch time
            vs dataset size.
The table is printed and written into benchmarks/RESULTS.md under its own heading.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))
from celebgan.conf import CONFIG_DIR  # noqa: E402
from celebgan.io import atomic_write  # noqa: E402  (found through the path above, installed or not)
from results import write_section  # noqa: E402  (RESULTS.md's one writer, next to this script)

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
CORES = os.cpu_count() or 1
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by device-name substring.
PEAK_BF16 = {"H200": 989, "H100 PCIe": 756, "H100": 989, "A100": 312, "L40S": 362, "A10G": 70, "RTX 4090": 165}

SETTINGS = {  # quick: validates the script in a few minutes; full: the figures to report
    "quick": dict(threads_seconds=4, num_jpegs=768, cpu_batch=16, cpu_warmup=1, cpu_steps=2, scale_sizes=[2_000, 10_000],
                  gpu_warmup=10, gpu_steps=50, gpu_scale_sizes=[10_000, 50_000]),
    "full": dict(threads_seconds=20, num_jpegs=4096, cpu_batch=64, cpu_warmup=2, cpu_steps=6, scale_sizes=[10_000, 50_000, 200_000],
                 gpu_warmup=30, gpu_steps=300, gpu_scale_sizes=[10_000, 50_000, 200_000]),
}


# ---------------------------------------------------------------------------------------------
# Shared pieces


def peak_memory() -> dict:
    kb = 1024  # ru_maxrss is in KiB on Linux
    mem = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kb / 2**20,
           "child_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kb / 2**20}
    if CUDA:
        mem["gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return mem


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def make_jpegs(folder: Path, n: int) -> None:
    """n CelebA-sized (178x218) JPEGs of synthetic faces with per-file noise, in an ImageFolder tree."""
    from PIL import Image

    from celebgan.data.synthetic import render_faces

    faces = folder / "faces"
    faces.mkdir(parents=True, exist_ok=True)
    if len(list(faces.glob("*.jpg"))) == n:
        return
    base, _ = render_faces(64, 64, seed=1)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = Image.fromarray(base[i % 64].permute(1, 2, 0).numpy()).resize((178, 218), Image.Resampling.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-6, 7, (218, 178, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(faces / f"{i:06d}.jpg", quality=90)


def synthetic_uint8(n: int, size: int = 64) -> torch.Tensor:
    """(n, 3, S, S) uint8 faces: 256 rendered ones tiled (content does not change the timings)."""
    from celebgan.data.synthetic import render_faces

    base, _ = render_faces(256, size, seed=2)
    return base.repeat((n + 255) // 256, 1, 1, 1)[:n].contiguous()


def flops_per_image(size: int = 64) -> float:
    """FLOPs of one training iteration per image: G forward, D on real and fake, both backwards."""
    from torch.utils.flop_counter import FlopCounterMode

    from celebgan.gan.networks import Discriminator, Generator

    G, D = Generator(img_size=size), Discriminator(img_size=size)
    batch = 4
    with FlopCounterMode(display=False) as counter:
        plain_step(G, D, *plain_optimizers(G, D), torch.randn(batch, 3, size, size), torch.device("cpu"), False)
    return counter.get_total_flops() / batch


def plain_optimizers(G, D):
    return (torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999)),
            torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999)))


def plain_step(G, D, g_opt, d_opt, real, device, bf16: bool) -> None:
    """The classic DCGAN loop (pytorch/examples): D on real, D on fake, then the G step."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    b = real.size(0)
    ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        fake = G(torch.randn(b, 100, 1, 1, device=device))
        d_loss = bce(D(real).float(), ones) + bce(D(fake.detach()).float(), zeros)
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        g_loss = bce(D(fake).float(), ones)
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    g_opt.step()


def jpeg_loader(folder: Path, batch_size: int, img_size: int = 64):
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    transform = T.Compose([T.CenterCrop(178), T.Resize(img_size), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize([0.5] * 3, [0.5] * 3)])
    return DataLoader(ImageFolder(str(folder), transform=transform), batch_size=batch_size, shuffle=True,
                      drop_last=True, num_workers=CORES, persistent_workers=True, pin_memory=CUDA)


def prepared_datamodule(folder: Path, prepared_dir: Path, batch_size: int, *, on_device: bool = False,
                        num_workers: int = CORES):
    from celebgan.data.modules import CelebADataModule
    from celebgan.data.prepared import prepare

    prepare(str(folder), "train", "full", 64, str(prepared_dir), progress=False)  # no-op when up to date
    dm = CelebADataModule(root=str(folder), img_size=64, batch_size=batch_size, num_workers=num_workers,
                          prepared_dir=str(prepared_dir), on_device=on_device)
    dm.setup("fit")
    return dm


def timed_epochs(batches, min_seconds: float = 2.0, min_epochs: int = 2) -> float:
    """images/s over whole epochs after a first (warm-up) epoch; batches() yields one epoch."""
    for _ in batches():
        pass
    images, epochs, start = 0, 0, time.perf_counter()
    while epochs < min_epochs or time.perf_counter() - start < min_seconds:
        for x in batches():
            images += x.size(0)
        epochs += 1
    sync()
    return images / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# Rows (each runs in its own process: `--row NAME`)


def row_data_jpeg(work: Path, s: dict) -> dict:
    loader = jpeg_loader(work / "jpegs", 128)

    def epoch():
        for x, _ in loader:
            yield x.to(DEVICE, non_blocking=True)

    rate = timed_epochs(epoch)
    return {"images_per_s": rate, "notes": f"ImageFolder + PIL, num_workers={CORES}"}


def row_data_prepared(work: Path, s: dict, num_workers: int | None = None) -> dict:
    from celebgan.data.batches import batch_loader

    dm = prepared_datamodule(work / "jpegs", work / "prepared", 128)
    loader = dm.train_dataloader() if num_workers is None else batch_loader(dm.train_set, 128, num_workers=num_workers)

    def epoch():
        for batch in loader:
            images, _ = dm.on_after_batch_transfer([t.to(DEVICE, non_blocking=True) for t in batch])
            yield images

    rate = timed_epochs(epoch)
    return {"images_per_s": rate, "notes": f"uint8 memmap slices, {loader.num_workers} worker process(es), "
                                           f"convert+flip on {DEVICE.type}"}


def row_data_prepared_worker(work: Path, s: dict) -> dict:
    return row_data_prepared(work, s, num_workers=1)


def row_prepare(work: Path, s: dict) -> dict:
    from celebgan.data.prepared import build, source_of

    source = source_of(work / "jpegs" / "faces", "train", "full", 64)
    start = time.perf_counter()
    build(source, work / "prepare_timing", progress=False)
    return {"images_per_s": len(source.files) / (time.perf_counter() - start),
            "notes": f"one-off decode into the array, {CORES} processes"}


def row_scale(work: Path, s: dict) -> dict:
    from celebgan.data.batches import ArrayFaces, batch_loader, to_model_input

    times = []
    for n in s["scale_sizes"]:
        path = work / f"scale_{n}.npy"
        if not path.exists():
            tile = synthetic_uint8(1024).permute(0, 2, 3, 1).numpy()
            with atomic_write(path) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 64, 64, 3))
                for i in range(0, n, 1024):
                    out[i:i + 1024] = tile[: min(1024, n - i)]
                out.flush()
                del out
        loader = batch_loader(ArrayFaces(path, torch.zeros(n, 0)), 128)
        for _ in loader:  # page cache warm-up, as in any epoch after the first
            pass
        start = time.perf_counter()
        for images, _ in loader:
            to_model_input(images.to(DEVICE, non_blocking=True), True)
        sync()
        times.append(time.perf_counter() - start)
        del loader
    sizes = ", ".join(f"{n // 1000}k: {t:.2f} s" for n, t in zip(s["scale_sizes"], times))
    return {"images_per_s": s["scale_sizes"][-1] // 128 * 128 / times[-1], "notes": f"loader epoch time {sizes}"}


def row_step(work: Path, s: dict, which: str, bf16: bool, *, gpu: bool = False) -> dict:
    batch = 128 if gpu else s["cpu_batch"]
    warmup, steps = (s["gpu_warmup"], s["gpu_steps"]) if gpu else (s["cpu_warmup"], s["cpu_steps"])
    torch.manual_seed(0)
    if which == "plain":
        return plain_loop(work, batch, warmup, steps, bf16, jpeg=gpu)
    return celebgan_loop(work, batch, warmup, steps, bf16, gpu=gpu)


def plain_loop(work: Path, batch: int, warmup: int, steps: int, bf16: bool, *, jpeg: bool) -> dict:
    from torch.utils.data import DataLoader, TensorDataset

    from celebgan.gan.networks import Discriminator, Generator

    G, D = Generator().to(DEVICE), Discriminator().to(DEVICE)
    g_opt, d_opt = plain_optimizers(G, D)
    if jpeg:
        loader = jpeg_loader(work / "jpegs", batch)
    else:
        data = synthetic_uint8(batch * (warmup + steps)).float().div(127.5).sub(1)
        loader = DataLoader(TensorDataset(data), batch_size=batch, shuffle=True, drop_last=True)
    done, start = 0, None
    while done < warmup + steps:
        for (real, *_) in loader:
            plain_step(G, D, g_opt, d_opt, real.to(DEVICE, non_blocking=True), DEVICE, bf16)
            done += 1
            if done == warmup:
                sync()
                start = time.perf_counter()
            if done == warmup + steps:
                break
    sync()
    source = f"JPEG loader ({CORES} workers)" if jpeg else "in-memory tensors"
    return {"images_per_s": steps * batch / (time.perf_counter() - start),
            "notes": f"batch {batch}, {'bf16 autocast' if bf16 else 'fp32'}, {source}"}


def celebgan_loop(work: Path, batch: int, warmup: int, steps: int, bf16: bool, *, gpu: bool) -> dict:
    import hydra
    import lightning as L
    from hydra import compose, initialize_config_dir
    from lightning.pytorch.loggers import TensorBoardLogger

    from celebgan.gan import clock

    overrides = ["data=synthetic", f"data.batch_size={batch}", "data.img_size=64", "data.num_images=256"]
    if gpu:
        overrides.append("model.compile=true")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    model = hydra.utils.instantiate(cfg.model)
    if gpu:
        dm = prepared_datamodule(work / "jpegs", work / "prepared", batch, on_device=True)
    else:
        dm = hydra.utils.instantiate(cfg.data)
        dm.setup("fit")
        from celebgan.data.batches import ArrayFaces

        n = batch * (warmup + steps)
        dm.train_set = ArrayFaces(synthetic_uint8(n).permute(0, 2, 3, 1).contiguous(), torch.zeros(n, 0))

    stamps = []

    class Stamp(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if len(stamps) in (warmup - 1, warmup + steps - 1):
                sync()
            stamps.append(time.perf_counter())

    # The project's trainer settings, minus checkpoints and the progress bar (the plain loop has
    # neither). On a GPU, logging every step would add a host sync per step: log every 100 there.
    trainer = L.Trainer(accelerator="gpu" if gpu else "cpu", devices=1, precision="bf16-mixed" if bf16 else "32-true",
                        max_steps=clock.optimizer_steps(warmup + steps, model.n_dis),
                        logger=TensorBoardLogger(str(work / "tb")),
                        log_every_n_steps=100 if gpu else cfg.trainer.log_every_n_steps, benchmark=True,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Stamp()])
    trainer.fit(model, dm)
    rate = steps * batch / (stamps[warmup + steps - 1] - stamps[warmup - 1])
    data = "prepared JPEG set on the GPU, compiled" if gpu else "synthetic uint8 batches"
    return {"images_per_s": rate, "notes": f"batch {batch}, {'bf16-mixed' if bf16 else 'fp32'}, {data}"}


def row_gpu_scale(work: Path, s: dict) -> dict:
    import hydra
    import lightning as L
    from hydra import compose, initialize_config_dir

    from celebgan.data.batches import ArrayFaces

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=synthetic", "data.num_images=256", "model.compile=true",
                                                        "data.on_device=true"])
    model = hydra.utils.instantiate(cfg.model)
    times = []
    for n in [s["gpu_scale_sizes"][0], *s["gpu_scale_sizes"]]:  # the first run compiles
        dm = hydra.utils.instantiate(cfg.data)
        dm.setup("fit")
        dm.train_set = ArrayFaces(synthetic_uint8(n).permute(0, 2, 3, 1).contiguous(), torch.zeros(n, 0), gather=False)
        epoch = []

        class Stamp(L.Callback):
            def on_train_epoch_start(self, *args):
                sync()
                epoch.append(time.perf_counter())

            def on_train_epoch_end(self, *args):
                sync()
                epoch.append(time.perf_counter())

        trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_epochs=1, logger=False,
                            log_every_n_steps=100, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[Stamp()])
        trainer.fit(model, dm)
        times.append(epoch[1] - epoch[0])
    sizes = ", ".join(f"{n // 1000}k: {t:.1f} s" for n, t in zip(s["gpu_scale_sizes"], times[1:]))
    n = s["gpu_scale_sizes"][-1]
    return {"images_per_s": n // 128 * 128 / times[-1], "notes": f"training epoch time {sizes}"}


def row_threads(work: Path, s: dict, threads: str) -> dict:
    """The demo's step as a plain loop (half-width 32px networks, batch 32) for threads_seconds, with
    1 thread, every core, or what celebgan's threads=auto chooses now (beside this row's load)."""
    from torch.utils.data import DataLoader, TensorDataset

    from celebgan.devices import choose_threads
    from celebgan.gan.networks import Discriminator, Generator

    os.environ.pop("OMP_NUM_THREADS", None)  # auto must measure the load, not read the benchmark's setting
    count = {"1": 1, "all": CORES}.get(threads) or choose_threads("auto")[0]
    torch.set_num_threads(count)
    torch.manual_seed(0)
    G, D = Generator(img_size=32, ngf=32), Discriminator(img_size=32, ndf=32)
    g_opt, d_opt = plain_optimizers(G, D)
    batch = 32
    data = synthetic_uint8(batch * 8, size=32).float().div(127.5).sub(1)
    loader = DataLoader(TensorDataset(data), batch_size=batch, shuffle=True, drop_last=True)
    for (real,) in loader:  # warm-up: one pass
        plain_step(G, D, g_opt, d_opt, real, DEVICE, False)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < s["threads_seconds"]:
        for (real,) in loader:
            plain_step(G, D, g_opt, d_opt, real, DEVICE, False)
            done += 1
    return {"images_per_s": done * batch / (time.perf_counter() - start), "notes": f"{count} thread(s)"}


ROWS = {
    "data_jpeg": ("data", "JPEG folder loader", row_data_jpeg),
    "data_prepared": ("data", "prepared loader", row_data_prepared),
    "data_prepared_worker": ("data", "prepared loader via 1 worker", row_data_prepared_worker),
    "prepare": ("data", "celebgan.prepare (one-off)", row_prepare),
    "scale": ("scale", "prepared loader, largest size", row_scale),
    "step_plain_fp32": ("step", "plain loop fp32", lambda w, s: row_step(w, s, "plain", False)),
    "step_celebgan_fp32": ("step", "celebgan fp32", lambda w, s: row_step(w, s, "celebgan", False)),
    "step_plain_bf16": ("step", "plain loop bf16", lambda w, s: row_step(w, s, "plain", True)),
    "step_celebgan_bf16": ("step", "celebgan bf16-mixed", lambda w, s: row_step(w, s, "celebgan", True)),
    **{f"threads_{load}_{n}": ("threads", f"demo step, {load}, {label}", lambda w, s, n=n: row_threads(w, s, n))
       for load in ("idle", "loaded") for n, label in (("1", "1 thread"), ("all", "all cores"), ("auto", "threads=auto"))},
}
GPU_ROWS = {
    "gpu_plain_jpeg": ("gpu", "plain loop bf16, JPEG-fed", lambda w, s: row_step(w, s, "plain", True, gpu=True)),
    "gpu_celebgan": ("gpu", "celebgan bf16 compiled, on-device", lambda w, s: row_step(w, s, "celebgan", True, gpu=True)),
    "gpu_scale": ("gpu", "celebgan epoch, largest size", row_gpu_scale),
}
RATIOS = [  # (label, numerator row, denominator row, target)
    ("prepared / JPEG loader", "data_prepared", "data_jpeg", 20.0),
    ("celebgan fp32 / plain fp32", "step_celebgan_fp32", "step_plain_fp32", 0.95),
    ("celebgan bf16-mixed / plain fp32", "step_celebgan_bf16", "step_plain_fp32", 1.5),
    ("celebgan bf16-mixed / plain bf16", "step_celebgan_bf16", "step_plain_bf16", None),
    ("GPU: celebgan / JPEG-fed plain loop", "gpu_celebgan", "gpu_plain_jpeg", 5.0),
    # threads=auto keeps (nearly) the best fixed count's speed on an idle and on a loaded machine
    ("threads=auto / all cores, idle", "threads_idle_auto", "threads_idle_all", 0.9),
    ("threads=auto / 1 thread, loaded", "threads_loaded_auto", "threads_loaded_1", 0.9),
    ("all cores / 1 thread, loaded", "threads_loaded_all", "threads_loaded_1", None),
]


# ---------------------------------------------------------------------------------------------
# Driver


def run_row(name: str, work: Path, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--row", name, "--work", str(work), "--mode", mode]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    # A loaded row runs beside cores + 1 busy processes of the benchmark's own, started first so
    # that the row's threads=auto sees them.
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(CORES + 1)] \
        if "_loaded_" in name else []
    try:
        time.sleep(1.0 if spinners else 0)
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    last = result.stdout.strip().splitlines()[-1:] if result.returncode == 0 else []
    if not last or not last[0].startswith("{"):
        tail = (result.stderr or result.stdout)[-1500:]
        print(f"row {name} failed (exit {result.returncode}):\n{tail}", file=sys.stderr)
        return {"error": f"exit {result.returncode}"}
    return json.loads(last[0])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if CUDA else ", no GPU"
    return f"{cpu}, {CORES} cores{gpu}"


def table(results: dict, flops: float) -> str:
    peak = next((v for k, v in PEAK_BF16.items() if CUDA and k in torch.cuda.get_device_name()), None)
    lines = ["| group | row | images/s | TFLOP/s | peak RSS MB (main / workers) | peak GPU MB | notes |",
             "|---|---|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        group, label, _ = {**ROWS, **GPU_ROWS}[name]
        if "error" in r:
            lines.append(f"| {group} | {label} | failed: {r['error']} | | | | |")
            continue
        tflops = r["images_per_s"] * flops / 1e12 if group in ("step", "gpu") and name != "gpu_scale" else None
        tf = f"{tflops:.3f}" + (f" of {peak}" if peak and group == "gpu" else "") if tflops else ""
        gpu = f"{r['gpu_mb']:.0f}" if "gpu_mb" in r else "-"
        lines.append(f"| {group} | {label} | {r['images_per_s']:,.1f} | {tf} | {r['rss_mb']:.0f} / "
                     f"{r['child_rss_mb']:.0f} | {gpu} | {r['notes']} |")
    lines += ["", "| ratio (same run) | measured | target |", "|---|---:|---:|"]
    for label, a, b, target in RATIOS:
        if "images_per_s" in results.get(a, {}) and "images_per_s" in results.get(b, {}):
            ratio = results[a]["images_per_s"] / results[b]["images_per_s"]
            verdict = "" if target is None else (" (met)" if ratio >= target else " (NOT met)")
            lines.append(f"| {label} | {ratio:.2f}x | {'-' if target is None else f'>= {target}x'}{verdict} |")
    lines.append(f"\nTraining FLOPs per image (G forward, D on real and fake, backwards): {flops / 1e9:.2f} GFLOP.")
    return "\n".join(lines)


def write_results(section: str, heading: str = "## throughput") -> None:
    write_section(HERE / "RESULTS.md", f"{heading}\n\n{section}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script in a few minutes")
    parser.add_argument("--rows", nargs="*", help="only these rows (default: all)")
    parser.add_argument("--work", help="folder for generated JPEGs and arrays (default: a temporary one)")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(CORES)
    if args.row:  # a child: one row, its result as the last line of stdout
        import logging

        logging.disable(logging.WARNING)
        result = {**ROWS, **GPU_ROWS}[args.row][2](Path(args.work), SETTINGS[args.mode])
        print(json.dumps({**result, **peak_memory()}))
        return
    mode = "quick" if args.quick else "full"
    names = args.rows or [*ROWS, *(GPU_ROWS if CUDA else [])]
    with tempfile.TemporaryDirectory(prefix="celebgan-bench-") as tmp:
        work = Path(args.work or tmp)
        if any(not name.startswith("threads_") for name in names):
            print(f"Generating {SETTINGS[mode]['num_jpegs']} JPEGs in {work} ...", flush=True)
            make_jpegs(work / "jpegs", SETTINGS[mode]["num_jpegs"])
        results = {}
        for name in names:
            print(f"  {name} ...", flush=True)
            results[name] = run_row(name, work, mode)
    flops = flops_per_image()
    command = "python benchmarks/throughput.py " + " ".join(sys.argv[1:])
    header = (f"{datetime.date.today()}; {machine()}; torch {torch.__version__}; {mode} mode; "
              f"command: `{command.strip()}`")
    section = header + "\n\n" + table(results, flops)
    print("\n" + section)
    # The threads rows alone (--rows threads_...) have a section of their own: the full table stays.
    alone = all(ROWS.get(name, ("",))[0] == "threads" for name in names)
    write_results(section, "## throughput: threads on a shared machine" if alone else "## throughput")


if __name__ == "__main__":
    main()
