"""CelebA's on-disk format: the accepted folder layouts, its list files, the image list of a split,
the reading of one image (upright, 8-bit RGB), crop and resize every reader applies, and the
fingerprint of a split's files.

Nothing here downloads or trains; data.py and prepare.py read CelebA through this module.
"""
import csv
import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps

from celebgan.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
SPLITS = {"train": 0, "valid": 1, "test": 2, "all": None}
# Side of the centre square crop as a fraction of the image's shorter side. On CelebA's aligned
# 178x218 images: `full` is 178x178, `face` is the 108x108 crop of the original DCGAN preprocessing.
CROPS = {"full": 1.0, "face": 108 / 178}
LAYOUTS_HELP = (
    "Accepted layouts under data.root:\n"
    "  torchvision: ROOT/celeba/img_align_celeba/*.jpg and ROOT/celeba/list_eval_partition.txt "
    "(ROOT/celeba/list_attr_celeba.txt optional)\n"
    "  Kaggle:      ROOT/img_align_celeba/img_align_celeba/*.jpg and ROOT/list_eval_partition.csv "
    "(ROOT/list_attr_celeba.csv optional)\n"
    "  plain:       any folder of images (no split files: every image trains)\n"
    "No dataset at hand? `data=synthetic` trains on built-in procedural faces, offline."
)


@dataclass
class Layout:
    kind: str  # torchvision | kaggle | plain
    image_dir: Path
    partition_file: Path | None = None
    attr_file: Path | None = None


def find_layout(root: str | os.PathLike) -> Layout:
    """Which of the accepted layouts `root` holds, or one UserError that lists them."""
    root = Path(root).expanduser()
    if not root.is_dir():
        where = "" if root.is_absolute() else f" (from {Path.cwd()})"
        raise UserError(f"CelebA folder not found: data.root={str(root)!r}{where} does not exist. Point "
                        f"data.root (or CELEBA_ROOT) at your copy.\n{LAYOUTS_HELP}")
    # torchvision's layout, with root pointing at the folder above `celeba/` or at `celeba/` itself.
    for base in (root / "celeba", root):
        if (base / "img_align_celeba").is_dir() and not (base / "img_align_celeba" / "img_align_celeba").is_dir():
            partition = base / "list_eval_partition.txt"
            attr = base / "list_attr_celeba.txt"
            return Layout("torchvision", base / "img_align_celeba", partition if partition.is_file() else None,
                          attr if attr.is_file() else None)
    if (root / "img_align_celeba" / "img_align_celeba").is_dir():
        partition, attr = root / "list_eval_partition.csv", root / "list_attr_celeba.csv"
        return Layout("kaggle", root / "img_align_celeba" / "img_align_celeba",
                      partition if partition.is_file() else None, attr if attr.is_file() else None)
    return Layout("plain", root)


def _damaged(path: Path, detail: str) -> UserError:
    return UserError(
        f"{path} is not a CelebA list file ({detail}). The download looks failed or incomplete (a Google "
        "Drive 'quota exceeded' page saved under the file's name is a common cause): download it again.")


def _read_table(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(column names, {filename: values}) of a CelebA list file in its .txt or Kaggle .csv form,
    each row with integer values; one UserError for a file that is not one."""
    try:
        header, table = _parse_table(path)
    except (UnicodeDecodeError, csv.Error, IndexError) as err:
        raise _damaged(path, str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    for name, values in table.items():
        if not values or len(values) != len(header) or not all(v.lstrip("-").isdigit() for v in values):
            raise _damaged(path, f"the row of {name[:40]!r} is not a file name and {len(header)} integer(s)")
    if not table:
        raise _damaged(path, "it lists no images")
    return header, table


def _parse_table(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            # Blanks around a cell (re-saved copies carry them) go, as the .txt form's split() drops them.
            rows = [[cell.strip() for cell in row] for row in csv.reader(f)]
        header, body = rows[0][1:], rows[1:]
    else:
        lines = path.read_text().splitlines()
        if path.name.startswith("list_attr"):  # count line, then the attribute names
            header, body = lines[1].split(), [ln.split() for ln in lines[2:]]
        else:
            header, body = ["partition"], [ln.split() for ln in lines]
    return header, {row[0]: row[1:] for row in body if any(row)}


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"data.split={split!r} is not one of {list(SPLITS)}.")


def list_images(root: str | os.PathLike, split: str = "train") -> tuple[list[Path], torch.Tensor | None, list[str]]:
    """Image paths of one split, their 0/1 attributes (or None) and the attribute names.

    Zero-byte files are left out with a warning. Checks run before any training starts, so a wrong
    or incomplete folder fails at once with a message that says what to do.
    """
    check_split(split)
    layout = find_layout(root)
    if layout.kind == "plain":
        files = sorted(p for p in layout.image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not files:
            raise UserError(f"No images found under data.root={str(root)!r}.\n{LAYOUTS_HELP}")
        if split not in ("train", "all"):
            raise UserError(f"data.split={split!r} needs CelebA's partition file, but {root} is a plain "
                            "folder of images with no split: use data.split=train or data.split=all.")
        names, attrs, attr_names = files, None, []
    else:
        present = {e.name for e in os.scandir(layout.image_dir) if e.is_file()}
        if layout.partition_file is None and split != "all":
            raise UserError(
                f"{layout.image_dir} looks like CelebA ({layout.kind} layout) but its "
                f"list_eval_partition file is missing, so data.split={split!r} cannot be selected. "
                "Restore the file (the download may be incomplete) or train on every image with data.split=all.")
        if layout.partition_file is not None:
            _, part = _read_table(layout.partition_file)
            if any(p not in ("0", "1", "2") for p, *_ in part.values()):
                raise _damaged(layout.partition_file, "its partitions are not all 0, 1 or 2")
            wanted = [n for n, (p, *_) in part.items() if SPLITS[split] is None or int(p) == SPLITS[split]]
        else:
            wanted = sorted(n for n in present if Path(n).suffix.lower() in IMAGE_EXTS)
        missing = [n for n in wanted if n not in present]
        if missing:
            raise UserError(
                f"{len(missing)} of the {len(wanted)} images of split {split!r} listed in "
                f"{layout.partition_file.name} are missing from {layout.image_dir} (first: {missing[0]}). "
                "The download or extraction looks incomplete: download it again.")
        if not wanted:
            raise UserError(f"Split {split!r} of {layout.image_dir} holds no images.\n{LAYOUTS_HELP}")
        names = [layout.image_dir / n for n in wanted]
        attrs, attr_names = None, []
        if layout.attr_file is not None:
            attr_names, table = _read_table(layout.attr_file)
            rows = [table.get(n) for n in wanted]
            if any(r is None for r in rows):
                log.warning("%s lacks some images of the split; attributes are not used.", layout.attr_file)
            else:
                attrs = (torch.tensor([[int(v) for v in r] for r in rows]) > 0).long()  # -1/1 -> 0/1
    keep = [i for i, p in enumerate(names) if os.path.getsize(p) > 0]
    if len(keep) < len(names):
        kept = set(keep)
        empty = [str(p) for i, p in enumerate(names) if i not in kept]
        log.warning("Skipping %d empty (zero-byte) image files: %s", len(empty), ", ".join(empty[:10]))
        names = [names[i] for i in keep]
        attrs = attrs[keep] if attrs is not None else None
    return names, attrs, attr_names


# Grayscale wider than 8 bits, which convert("RGB") would clip at 255 (a 16-bit scan turns white),
# read in the range its type declares and scaled to 0..255:
#   I;16, I;16B, ... 16-bit PNG and TIFF: 0..65535
#   I                32-bit integer TIFF: 0..65535 as well, since what such files hold in practice is a
#                    16-bit range stored wide; values outside it have no declared range and are refused
#   F                float TIFF: 0..1, the convention of scientific imaging tools; others are refused
# A fixed range per type, never the image's own minimum and maximum: that would stretch a dark
# picture to full contrast and make pixels depend on content.
WIDE_RANGES = {"I": 65535, "F": 1.0}


# Transparent pixels are composited on white: what an image viewer or a web page shows behind a
# transparent PNG (a cut-out face, an avatar), so the face trains as its author saw it. PIL's
# convert("RGB") would instead show whatever colour the file keeps under each transparent pixel,
# often black, or leftovers of an edit.
BACKGROUND = (255, 255, 255)


def read_image(path: str | os.PathLike) -> tuple[Image.Image, tuple[int, int] | None]:
    """(the image at `path` as 8-bit RGB, decoded fully, so that a truncated file fails here; its
    (width, height) when PIL's decompression-bomb check found it larger than Image.MAX_IMAGE_PIXELS,
    else None: say_large says so in celebgan's words). Every reader of image files comes here:
    the EXIF orientation a phone camera writes is applied (a portrait photo stored sideways trains
    upright), transparency is composited on BACKGROUND, wide grayscale is scaled (to_rgb)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            size = im.size
            img = to_rgb(ImageOps.exif_transpose(im))
    large = False
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            large = True
        else:  # any other warning, as it would have been shown
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return img, size if large else None


def say_large(path: str | os.PathLike, size: tuple[int, int], said=None) -> None:
    """What PIL's DecompressionBombWarning means for training, said once: `said` is a shared
    multiprocessing.Value (0 until said), so also once across worker processes; None says it."""
    if said is not None:
        with said.get_lock():
            if said.value:
                return
            said.value = 1
    width, height = size
    log.warning("%s is %dx%d pixels, more than the %s that PIL reads without warning: it is read, but each "
                "image this large takes about %.0f MB and a long decode before it is shrunk to data.img_size. "
                "Shrinking such images once (e.g. to 1024px on the long side) makes every epoch faster; "
                "images over twice that limit are skipped as unreadable. (Said once: others this large are "
                "read without a word.)", path, width, height, f"{Image.MAX_IMAGE_PIXELS:,}",
                width * height * 3 / 1e6)


def to_rgb(im: Image.Image) -> Image.Image:
    """`im` as 8-bit RGB, decoded fully (a truncated file fails here). Transparent pixels are
    composited on BACKGROUND. A wide grayscale (WIDE_RANGES) is scaled to 8 bits; one whose values
    lie outside its range raises ValueError naming them."""
    if im.mode not in WIDE_RANGES and not im.mode.startswith("I;16"):
        if im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info:
            background = Image.new("RGBA", im.size, (*BACKGROUND, 255))
            return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
        return im.convert("RGB")
    top = WIDE_RANGES.get(im.mode, 65535)
    values = np.asarray(im, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    # Floats may stray by rounding noise, up to what still rounds into 0..255; an integer outside
    # the range (a negative value) means another range, which the file does not declare.
    slack = 0.5 * top / 255 if im.mode == "F" else 0
    if not (-slack <= lo and hi <= top + slack):  # also NaN
        raise ValueError(f"its {im.mode} pixels span {lo:g}..{hi:g}, outside the 0..{top:g} that mode "
                         f"{im.mode} is read in: save it with 8 or 16 bits per channel")
    # Rounded half up: a 16-bit v becomes v / 257, the inverse of how 8 bits widen to 16 (v * 257).
    gray = np.clip(np.floor(values * (255 / top) + 0.5), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


class CenterSquareCrop:
    """Centre square of `fraction` x the shorter side (CelebA 178x218: 178 full, 108 face)."""

    def __init__(self, fraction: float):
        self.fraction = fraction

    def __call__(self, img: Image.Image) -> Image.Image:
        side = round(min(img.size) * self.fraction)
        return TF.center_crop(img, [side, side])


def crop_resize(img_size: int, crop: str = "full") -> list:
    """The geometric part of the decoding, shared by the JPEG loader and prepared arrays (which
    must hold the same pixels): PIL image -> (S, S) PIL image."""
    if crop not in CROPS:
        raise UserError(f"data.crop={crop!r} is not one of {list(CROPS)}.")
    return [CenterSquareCrop(CROPS[crop]), T.Resize(img_size, antialias=True)]


def face_transform(img_size: int, crop: str = "full", flip: bool = True) -> T.Compose:
    return T.Compose([
        *crop_resize(img_size, crop),
        *([T.RandomHorizontalFlip()] if flip else []),
        T.ToTensor(),
        T.Normalize([0.5] * 3, [0.5] * 3),  # [0, 1] -> [-1, 1], the range of G's tanh
    ])


def hash_files(files: Sequence[Path], *, relative_to: str | os.PathLike | None, h=None):
    """Feeds each file's name (relative to `relative_to`, or its bare name when None), size and
    mtime into the sha256 `h` (a new one when None) and returns it. One stat per file: cheap
    enough to run before every use, and an added, removed or rewritten image changes it."""
    h = hashlib.sha256() if h is None else h
    for p in files:
        st = os.stat(p)
        name = os.path.relpath(p, relative_to) if relative_to else Path(p).name
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h
