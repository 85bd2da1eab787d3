"""Look at a trained generator: `python -m celebgan.sample ckpt=PATH mode=grid|images|interpolate|...`.

sample(cfg) reads the composed config once (tests call it with one) and passes plain values on;
main() is the Hydra wrapper.
Every image comes from the EMA generator in eval mode; latents come from `seed` alone.
"""
from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from celebgan.cli import command
from celebgan.errors import UserError, check_number, check_whole
from celebgan.io import atomic_write

if TYPE_CHECKING:
    import torch

    from celebgan.gan.module import GAN

# torch, torchvision and the modules built on them are imported by the functions that use them,
# once the command runs: --help and a mistake on the command line answer without them.

log = logging.getLogger(__name__)

MODES = ("grid", "images", "interpolate", "progress", "compare", "attributes", "toggle")
DEFAULT_NAMES = {"images": "images", "progress": "progress.gif"}


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985), row by row: Gaussian latents live near a sphere, and
    a straight line between two of them passes through low-norm latents that G rarely saw."""
    import torch

    a, b = z0.flatten(1), z1.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    omega = torch.arccos(cos.clamp(-1.0, 1.0))[:, None]
    so = torch.sin(omega)
    # t=0 and t=1 give sin(omega)/sin(omega) = 1 exactly, so the endpoints are z0 and z1.
    out = torch.where(so.abs() > 1e-6, (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so,
                      (1 - t) * a + t * b)  # (anti)parallel: no unique great circle, fall back to a line
    return out.view_as(z0)


def write_grid(gan: GAN, out: Path, *, n: int, nrow: int, seed: int, batch_size: int,
               fixed: dict[str, float] | None = None, truncation: float | None = None) -> dict[str, Any]:
    from celebgan.gan.images import conditions, generate, latents, save_png, to_grid

    z = latents(n, gan.generator.nz, seed, truncation)
    images = generate(gan, z, batch_size, labels=conditions(gan, n, seed, fixed))
    return {"out": save_png(to_grid(images, nrow), out)}


def write_images(gan: GAN, out: Path, *, n: int, seed: int, batch_size: int,
                 fixed: dict[str, float] | None = None, truncation: float | None = None) -> dict[str, Any]:
    """n PNGs 000000.png ... in a folder that appears complete or not at all, written batch by batch:
    memory holds a batch of latents and images, whatever n is. Names have 6 digits, more when n
    needs them, so that they sort in order."""
    from tqdm import tqdm

    from celebgan.gan.images import conditions, latent_batches

    if out.exists():
        raise UserError(f"out={str(out)!r} already exists; choose another out, or delete it to write it again.")
    batches = latent_batches(n, gan.generator.nz, seed, batch_size, truncation)
    labels = conditions(gan, n, seed, fixed)  # (n, A) small numbers: a million faces of 40 attributes take 160 MB
    labels = labels.split(batch_size) if labels is not None else itertools.repeat(None)
    with no_new_folders_on_failure(out), atomic_write(out) as tmp:
        tmp.mkdir()
        digits = max(6, len(str(n - 1)))
        written = write_pngs(gan, next(batches), next(labels), tmp, 0, digits)
        log.info("%s", disk_estimate(n, gan.img_size, out, tmp))
        # disable=None: no bar where stderr is not a terminal (a log file would collect every redraw)
        for z, y in tqdm(zip(batches, labels), initial=1, total=-(-n // batch_size), desc="images", unit="batch",
                         disable=None):
            written = write_pngs(gan, z, y, tmp, written, digits)
    return {"out": out, "count": n}


def write_pngs(gan: GAN, z: torch.Tensor, labels: torch.Tensor | None, folder: Path, first: int, digits: int) -> int:
    """The images of latents z (and attributes) as folder/NNNNNN.png from number `first` on; returns
    the next number."""
    from torchvision.utils import save_image

    for i, img in enumerate(gan.sample(z, labels).cpu(), start=first):
        save_image(img, folder / f"{i:0{digits}d}.png", normalize=True, value_range=(-1, 1))
    return first + len(z)


def disk_estimate(n: int, img_size: int, out: Path, written: Path) -> str:
    """The line said once the first batch is written: how many PNGs, where, and the disk they will
    take, from what the first ones take (a PNG's size depends on the faces; whole file-system
    blocks each). A disk that cannot hold them is refused now rather than when it is full."""
    files = list(written.iterdir())
    per_image = sum(getattr(st, "st_blocks", 0) * 512 or st.st_size for st in map(os.stat, files)) / len(files)
    need, free = n * per_image, shutil.disk_usage(written).free
    if need > free:
        raise UserError(f"{n:,} PNGs of {img_size}px take about {size_text(need)} ({per_image / 1e3:.1f} kB "
                        f"each), but the disk of out={str(out)!r} has {size_text(free)} free. Lower n, or set "
                        "out= on another disk.")
    return (f"Writing {n:,} PNGs of {img_size}px to {out}: about {size_text(need)} on disk "
            f"({per_image / 1e3:.1f} kB each; {size_text(free)} free there).")


def size_text(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:,.1f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:,.1f} MB"


@contextmanager
def no_new_folders_on_failure(out: Path) -> Iterator[None]:
    """The folders made for `out` (the default outputs/sample/<time>_<mode>/) go again, when still
    empty, if the command fails: a failed command leaves nothing."""
    existing = next(p for p in out.absolute().parents if p.exists())
    try:
        yield
    except BaseException:
        for folder in out.absolute().parents:
            if folder == existing or not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()
        raise


def interpolation_latents(nz: int, rows: int, steps: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """(rows * steps, nz, 1, 1): row r runs from latents(2 rows)[r] to latents(2 rows)[rows + r]."""
    import torch

    from celebgan.gan.images import latents

    z = latents(2 * rows, nz, seed, truncation)
    z0, z1 = z[:rows], z[rows:]
    ts = torch.linspace(0, 1, steps).tolist()
    return torch.stack([slerp(z0, z1, t) for t in ts], dim=1).flatten(0, 1)


def write_interpolation(gan: GAN, out: Path, *, rows: int, steps: int, seed: int, batch_size: int,
                        fixed: dict[str, float] | None = None, truncation: float | None = None) -> dict[str, Any]:
    from celebgan.gan.images import conditions, generate, save_png, to_grid

    if steps < 2:
        raise UserError(f"steps={steps}: an interpolation needs at least its two endpoints (steps>=2).")
    z = interpolation_latents(gan.generator.nz, rows, steps, seed, truncation)
    labels = conditions(gan, rows, seed, fixed)  # one set of attributes per row, kept along it
    labels = labels.repeat_interleave(steps, dim=0) if labels is not None else None
    return {"out": save_png(to_grid(generate(gan, z, batch_size, labels=labels), steps), out)}


def write_progress(run: Path, out: Path, frame_ms: int) -> dict[str, Any]:
    """An animated GIF of a run's per-epoch grids of the fixed latents, looping forever, each frame
    captioned with its epoch (counted from 1, as in the file names and on the console)."""
    from PIL import Image
    from torchvision.transforms.functional import to_pil_image, to_tensor

    from celebgan.gan.images import caption

    frames = sorted((run / "samples").glob("epoch_*.png"))
    if not frames:
        raise UserError(f"No progress grids in {run / 'samples'}: progress needs the run directory of a "
                        "celebgan.train run (set run=RUN_DIR, or ckpt=RUN_DIR/checkpoints/last.ckpt).")
    images = []
    for path in frames:
        grid = to_tensor(Image.open(path).convert("RGB"))
        epoch = int(path.stem.removeprefix("epoch_"))
        images.append(to_pil_image(caption(grid, [(grid.shape[-1] / 2, f"epoch {epoch}")])))
    with atomic_write(out) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return {"out": out, "frames": len(images)}


def real_images(config: dict[str, Any], n: int, seed: int, split: str, data_root: str | None) -> torch.Tensor:
    """(n, 3, S, S) real images in [-1, 1], unflipped, a seeded random subset of one split."""
    import torch

    from celebgan.run.checkpoint import real_subset

    dataset, _ = real_subset(config, split, n, seed, root=data_root)
    if len(dataset) < n:
        raise UserError(f"Split {split!r} holds {len(dataset)} images, fewer than n={n}; lower n.")
    return torch.stack([dataset[i][0] for i in range(n)])


def write_comparison(gan: GAN, config: dict[str, Any], out: Path, *, n: int, nrow: int, seed: int, batch_size: int,
                     split: str, data_root: str | None, fixed: dict[str, float] | None = None,
                     truncation: float | None = None) -> dict[str, Any]:
    """Real images (left) and generated ones (right), two equal grids with a white band between,
    under a caption that says which is which."""
    import torch

    from celebgan.gan.images import caption, conditions, generate, latents, save_png, to_grid

    real = to_grid(real_images(config, n, seed, split, data_root), nrow)
    z = latents(n, gan.generator.nz, seed, truncation)
    fake = to_grid(generate(gan, z, batch_size, labels=conditions(gan, n, seed, fixed)), nrow)
    band = torch.ones(3, real.shape[1], max(8, gan.img_size // 2))
    side, gap = real.shape[-1], band.shape[-1]
    labels = [(side / 2, f"real ({split})"), (side + gap + side / 2, "generated")]
    return {"out": save_png(caption(torch.cat([real, band, fake], dim=2), labels), out)}


def write_toggle(gan: GAN, out: Path, *, rows: list[str], faces: int, scale: int, seed: int, batch_size: int,
                 fixed: dict[str, float] | None = None, truncation: float | None = None) -> dict[str, Any]:
    """One row per attribute of a conditional model: `faces` faces, each without (left) and with
    (right) the row's attribute, with the same latents in every row and the same other attributes
    (label rows the training data holds, or fixed by attributes=), changed only as the data asks:
    switching a hair colour on switches the others off (celebgan.gan.labels.LabelTable.switched).
    Faces are drawn `scale` times larger (each pixel a block). A strip above each row names its
    attribute and what switching it on turns off; the strip on top marks each column off or on."""
    import torch

    from celebgan.gan.images import caption, column_centres, conditions, enlarge, generate, latents, save_png, to_grid

    z = latents(faces, gan.generator.nz, seed, truncation).repeat_interleave(2, dim=0)  # each face twice
    base = conditions(gan, faces, seed, fixed)
    table = gan.label_table
    strips = []
    for name in rows:
        column = gan.attr_names.index(name)
        if table is not None:
            off, on = table.switched(base, column, 0.0), table.switched(base, column, 1.0)
            others = [gan.attr_names[k] for k in table.exclusive(column)]
        else:  # an older checkpoint: the attribute alone switched
            off, on = base.clone(), base.clone()
            off[:, column], on[:, column] = 0.0, 1.0
            others = []
        labels = torch.stack([off, on], dim=1).flatten(0, 1)  # off, on, off, on, ...
        grid = to_grid(enlarge(generate(gan, z, batch_size, labels=labels), scale), 2 * faces)
        text = f"{name} (on turns off {', '.join(others)})" if others else name
        strips.append(caption(grid, [(grid.shape[-1] / 2, text)]))
        log.info("toggle row %s: on turns off %s", name, ", ".join(others) or "nothing")
    switch = [False, True] * faces
    header = [(x, "on" if on else "off") for x, on in zip(column_centres(2 * faces, scale * gan.img_size), switch)]
    strips.insert(0, caption(torch.ones(3, 0, strips[0].shape[-1]), header))
    return {"out": save_png(torch.cat(strips, dim=1), out), "rows": rows}


def write_attribute_edits(gan: GAN, config: dict[str, Any], out: Path, *, attribute: str, strength: float,
                          num_latents: int, cache_dir: str | Path, classifier: dict[str, Any], data_root: str | None,
                          rows: int, steps: int, seed: int, batch_size: int,
                          truncation: float | None = None) -> dict[str, Any]:
    """A grid whose rows move faces along the attribute's direction, from -strength to +strength.
    classifier: train_classifier's settings; data_root: where the run's images live now, if they moved."""
    import torch

    from celebgan.gan.directions import attribute_direction, attribute_scores, edit_latents
    from celebgan.gan.images import caption, column_centres, generate, latents, save_png, to_grid
    from celebgan.metrics.judge import cached_classifier
    from celebgan.run.checkpoint import real_subset

    data_config = dict(config["data"])
    if data_root is not None:
        data_config["root"] = data_root
    device = next(gan.parameters()).device
    model, record = cached_classifier(data_config, cache_dir, classifier, device, read=real_subset)
    names = record["attr_names"]
    if attribute not in names:
        raise UserError(f"direction.attribute={attribute!r} is not one of this dataset's attributes: {names}.")
    index = names.index(attribute)
    log.info("Attribute classifier: held-out accuracy %.3f on %s (always-majority: %.3f; mean over all %d "
             "attributes %.3f), from %s", record["accuracy"][attribute], attribute,
             record["majority"][attribute], len(names), sum(record["accuracy"].values()) / len(names),
             record["path"])
    nz = gan.generator.nz
    z_all = latents(rows + num_latents, nz, seed, truncation)
    row_latents, pool = z_all[:rows], z_all[rows:]
    direction = attribute_direction(gan, model, index, pool, batch_size)
    strengths = torch.linspace(-strength, strength, steps)
    images = generate(gan, edit_latents(row_latents, direction, strengths), batch_size)
    scores = attribute_scores(model, images, index).view(rows, steps).mean(0)
    log.info("Mean %s score along the direction: %s", attribute,
             "  ".join(f"{s:+.1f}: {p:.2f}" for s, p in zip(strengths.tolist(), scores.tolist())))
    # The columns' strengths above the grid: 0 is the unedited face.
    labels = zip(column_centres(steps, gan.img_size), (f"{s:+.1f}" if s else "0" for s in strengths.tolist()))
    return {
        "out": save_png(caption(to_grid(images, steps), list(labels)), out),
        "accuracy": record["accuracy"][attribute],
        "majority": record["majority"][attribute],
        "direction": direction,
        "strengths": strengths,
        "scores": scores,
    }


def default_out(mode: str, out_dir: str, attribute: str) -> Path:
    name = DEFAULT_NAMES.get(mode, f"{mode}.png")
    if mode == "attributes":
        name = f"attributes_{attribute}.png"
    return Path(out_dir) / name


def check_out(out: Path) -> None:
    """Refuses an `out` that lies under a file (out=notes.txt/grid.png): no folder can be made there."""
    for folder in out.absolute().parents:
        if folder.exists():
            if not folder.is_dir():
                raise UserError(f"out={str(out)!r} lies under {str(folder)!r}, which is a file, not a folder: "
                                "choose another out.")
            return


def check_counts(counts: dict[str, Any]) -> None:
    """{key: value} of the settings that count something: each a whole number >= 1."""
    for key, value in counts.items():
        # The command line reads 1e7 as a float: say how to write it.
        note = f" (write {key}={int(value)})" if isinstance(value, float) and value.is_integer() else ""
        check_whole(key, value, 1, note)


# Float32 copies of its images that a mode holding them all has in memory at its peak: the
# generated batches and their concatenation, make_grid's normalised copy, the padded grid, the
# PNG's pixels. Measured (peak RSS over n images' float32 size): 3.0-4.1 for grid at 16 and 64px,
# 8-9 for compare, whose n real images count as n more here.
PEAK_COPIES = 4.5


def held_images(mode: str, n: int, rows: int, steps: int, num_latents: int, toggle_images: int = 0) -> int:
    """How many (3, S, S) images a mode holds in memory at once; 0 for the modes that do not
    (images streams them batch by batch, progress reads the run's grids)."""
    if mode in ("grid", "compare"):
        return n * (2 if mode == "compare" else 1)  # compare: n real and n generated
    if mode == "interpolate":
        return rows * steps
    if mode == "attributes":  # the direction's latents are generated at once, then the grid
        return max(rows * steps, num_latents)
    if mode == "toggle":
        return toggle_images
    return 0


def available_memory() -> int | None:
    """Bytes of memory this process could still take: Linux's MemAvailable, else the machine's
    physical memory; None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(mode: str, count: int, img_size: int) -> None:
    """A mode that holds all its `count` images (held_images) refuses, before generating any, a
    count that cannot fit."""
    available = available_memory()
    need = PEAK_COPIES * count * 3 * img_size * img_size * 4
    if available is None or need <= available:
        return
    counts = {"interpolate": "rows * steps", "attributes": "rows * steps or direction.num_latents",
              "toggle": "toggle.faces or the attributes named"}
    raise UserError(
        f"mode={mode} holds all its {count:,} images of {img_size}px in memory at once: it would need "
        f"about {need / 1e9:,.1f} GB, and this machine has {available / 1e9:,.1f} GB available. Lower "
        f"{counts.get(mode, 'n')}, or write any number of single PNGs with mode=images, which streams "
        "them to disk batch by batch.")


def toggle_rows(mode: str, names: list[str], fixed: dict[str, float]) -> list[str]:
    """mode=toggle's rows: the attributes named in attributes=, else every attribute of the model."""
    if mode != "toggle":
        return []
    if not names:
        raise UserError("mode=toggle switches a conditional model's attributes, and this checkpoint's model is "
                        "unconditional: train one with data.attributes=[Smiling,Eyeglasses] (or all) and "
                        "model=projection or model=acgan; mode=attributes finds latent directions instead.")
    return [name for name in names if name in fixed] or list(names)


def sample(cfg: DictConfig) -> dict[str, Any]:
    """The command's work, from its composed config (conf/sample.yaml): run one mode; returns what
    it wrote ({"out": path, ...})."""
    from celebgan.metrics.judge import check_classifier
    from celebgan.devices import pick_device
    from celebgan.gan.images import check_truncation, requested_attributes
    from celebgan.run.checkpoint import load_gan, run_dir
    from celebgan.run.plugins import trust_modules

    mode, ckpt, seed, n, nrow, rows, steps, batch_size = (
        cfg.mode, cfg.ckpt, cfg.seed, cfg.n, cfg.nrow, cfg.rows, cfg.steps, cfg.batch_size)
    direction, frame_ms, data_root, truncation = cfg.direction, cfg.progress.frame_ms, cfg.data_root, cfg.truncation
    requested = OmegaConf.to_container(cfg.attributes) if OmegaConf.is_config(cfg.attributes) else cfg.attributes
    if mode not in MODES:
        raise UserError(f"mode={mode!r} is not one of {list(MODES)}.")
    check_counts({"n": n, "rows": rows, "steps": steps, "nrow": nrow, "batch_size": batch_size,
                  "direction.num_latents": direction.num_latents, "toggle.faces": cfg.toggle.faces,
                  "toggle.scale": cfg.toggle.scale})
    check_whole("seed", seed, 0)
    check_whole("progress.frame_ms", frame_ms, 1, " (milliseconds per frame)")
    check_number("direction.strength", direction.strength, 0, above=True)
    check_classifier("direction.classifier", OmegaConf.to_container(direction.classifier))
    check_truncation(truncation)
    out = Path(cfg.out) if cfg.out is not None else default_out(mode, cfg.out_dir, direction.attribute)
    check_out(out)
    device = pick_device(cfg.device)
    if mode == "progress" and cfg.progress.run is not None:
        result = write_progress(Path(cfg.progress.run), out, frame_ms)
        log.info("Wrote %s", result["out"])
        return result
    if ckpt is None:
        raise UserError(f"mode={mode} needs a checkpoint: ckpt=RUN_DIR/checkpoints/last.ckpt.")
    trust_modules(cfg.get("trust"))  # the reader's choice, before the checkpoint is read
    gan, config = load_gan(ckpt, img_size=cfg.img_size)
    fixed = requested_attributes(requested, gan.attr_names)
    toggled = toggle_rows(mode, gan.attr_names, fixed)
    if mode == "attributes" and gan.attr_names:
        raise UserError("mode=attributes finds latent directions of an unconditional model; this one is "
                        f"conditional on {gan.attr_names}: ask for them with attributes='{{NAME: 1}}', or "
                        "see each switched off and on with mode=toggle.")
    check_fits_in_memory(mode, held_images(mode, n, rows, steps, direction.num_latents,
                                           2 * cfg.toggle.faces * len(toggled) * cfg.toggle.scale ** 2), gan.img_size)
    gan.to(device)
    generating = {"seed": seed, "batch_size": batch_size, "fixed": fixed, "truncation": truncation}
    if mode == "grid":
        result = write_grid(gan, out, n=n, nrow=nrow, **generating)
    elif mode == "images":
        result = write_images(gan, out, n=n, **generating)
    elif mode == "interpolate":
        result = write_interpolation(gan, out, rows=rows, steps=steps, **generating)
    elif mode == "progress":
        # A checkpoint kept outside a run folder: look next to it (and say so when nothing is there).
        run = run_dir(ckpt) or Path(ckpt).expanduser().resolve().parent
        result = write_progress(run, out, frame_ms)
    elif mode == "compare":
        result = write_comparison(gan, config, out, n=n, nrow=nrow, split=cfg.compare.split, data_root=data_root,
                                  **generating)
    elif mode == "toggle":
        result = write_toggle(gan, out, rows=toggled, faces=cfg.toggle.faces, scale=cfg.toggle.scale, **generating)
    else:
        result = write_attribute_edits(
            gan, config, out, attribute=direction.attribute, strength=direction.strength,
            num_latents=direction.num_latents, cache_dir=direction.cache_dir,
            classifier=OmegaConf.to_container(direction.classifier), data_root=data_root, rows=rows, steps=steps,
            seed=seed, batch_size=batch_size, truncation=truncation)
    log.info("Wrote %s", result["out"])
    return result


@command("sample")
def main(cfg: DictConfig) -> None:
    from celebgan.devices import use_threads

    use_threads(cfg.threads)
    sample(cfg)


if __name__ == "__main__":
    main()
