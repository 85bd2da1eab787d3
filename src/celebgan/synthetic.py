"""Procedural cartoon faces: a dataset with real structure to learn that needs no download.

Each image is drawn from its own random parameters (face shape and position, skin tone, hair
style and colour, eyes, brows, nose, smiling or neutral mouth, glasses, clothes, background) at 4x
the target size and downsampled with a Lanczos filter, which antialiases the edges. Image i of a
split depends only on (seed, split, i), so any subset is reproducible on its own.
"""
import numpy as np
import torch
from PIL import Image, ImageDraw

# The subset of CelebA's 40 attributes that these faces control, in CelebA's order.
ATTR_NAMES = ["Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses", "Gray_Hair", "Smiling"]
SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}

SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 125), (198, 134, 86), (141, 85, 54), (92, 58, 40)]
HAIR = {  # attribute -> base colour
    "Black_Hair": (30, 24, 22),
    "Brown_Hair": (106, 66, 38),
    "Blond_Hair": (226, 190, 110),
    "Gray_Hair": (170, 170, 172),
}
IRIS = [(70, 45, 25), (60, 110, 160), (80, 120, 60), (40, 30, 25)]


def _jitter(rng: np.random.Generator, rgb, amount: int) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _darker(rgb, f: float) -> tuple:
    return tuple(int(c * f) for c in rgb)


def render_face(rng: np.random.Generator, img_size: int) -> tuple[Image.Image, np.ndarray]:
    """One face as an RGB image of img_size x img_size, and its 0/1 labels in ATTR_NAMES order."""
    S = 4 * img_size  # supersampled canvas; the Lanczos downsample antialiases
    bg = tuple(int(c) for c in rng.integers(40, 230, 3))
    im = Image.new("RGB", (S, S), bg)
    d = ImageDraw.Draw(im)

    def box(cx, cy, rx, ry):
        return [S * (cx - rx), S * (cy - ry), S * (cx + rx), S * (cy + ry)]

    cx, cy = rng.uniform(0.44, 0.56), rng.uniform(0.48, 0.56)
    rx = rng.uniform(0.22, 0.29)
    ry = rx * rng.uniform(1.15, 1.4)
    skin = _jitter(rng, SKIN[rng.integers(len(SKIN))], 12)
    hair_name = list(HAIR)[rng.integers(len(HAIR))]
    hair = _jitter(rng, HAIR[hair_name], 14)
    style = rng.choice(["bald", "short", "long", "bangs"], p=[0.12, 0.38, 0.3, 0.2])

    # Clothes and neck sit behind the face.
    clothes = tuple(int(c) for c in rng.integers(20, 235, 3))
    d.ellipse(box(cx, 1.08, rx * 1.9, 0.3), fill=clothes)
    d.rectangle(box(cx, cy + ry * 0.9, rx * 0.45, ry * 0.45), fill=_darker(skin, 0.9))
    if style == "long":
        d.ellipse(box(cx, cy + ry * 0.25, rx * 1.3, ry * 1.25), fill=hair)
    # Ears, then the face.
    for side in (-1, 1):
        d.ellipse(box(cx + side * rx * 0.97, cy + ry * 0.05, rx * 0.16, ry * 0.2), fill=_darker(skin, 0.95))
    d.ellipse(box(cx, cy, rx, ry), fill=skin)
    if style in ("short", "long", "bangs"):
        # A cap of hair over the top of the head.
        d.chord(box(cx, cy - ry * 0.12, rx * 1.06, ry * 0.98), 180, 360, fill=hair)
    if style == "bangs":
        d.chord(box(cx, cy - ry * 0.42, rx * 0.98, ry * 0.42), 0, 180, fill=hair)

    # Eyes, irises and brows.
    eye_dx, eye_y = rx * rng.uniform(0.36, 0.46), cy - ry * rng.uniform(0.02, 0.14)
    eye_r = rx * rng.uniform(0.12, 0.17)
    iris = IRIS[rng.integers(len(IRIS))]
    brow = _darker(hair, 0.7) if style != "bald" else _darker(skin, 0.6)
    brow_lift = rng.uniform(1.6, 2.3)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        d.ellipse(box(ex, eye_y, eye_r, eye_r * 0.7), fill=(245, 245, 245))
        d.ellipse(box(ex, eye_y, eye_r * 0.5, eye_r * 0.5), fill=iris)
        d.ellipse(box(ex, eye_y, eye_r * 0.22, eye_r * 0.22), fill=(10, 10, 10))
        by = eye_y - eye_r * brow_lift
        d.line([S * (ex - eye_r * 1.1), S * (by + side * 0.004), S * (ex + eye_r * 1.1), S * (by - side * 0.004)],
               fill=brow, width=max(1, int(S * 0.018)))

    # Nose.
    ny = cy + ry * rng.uniform(0.12, 0.22)
    d.polygon([(S * cx, S * (eye_y + eye_r)), (S * (cx - rx * 0.12), S * ny), (S * (cx + rx * 0.1), S * ny)],
              fill=_darker(skin, 0.82))

    # Mouth: a smile is an open arc with teeth, neutral is a flat line.
    smiling = bool(rng.random() < 0.5)
    my, mw = cy + ry * rng.uniform(0.45, 0.55), rx * rng.uniform(0.35, 0.5)
    lips = _jitter(rng, (170, 60, 60), 25)
    if smiling:
        d.chord(box(cx, my - ry * 0.08, mw, ry * 0.2), 0, 180, fill=lips)
        d.chord(box(cx, my - ry * 0.08, mw * 0.82, ry * 0.13), 0, 180, fill=(250, 250, 250))
    else:
        d.line([S * (cx - mw * 0.8), S * my, S * (cx + mw * 0.8), S * my], fill=lips, width=max(1, int(S * 0.022)))

    glasses = bool(rng.random() < 0.3)
    if glasses:
        frame = tuple(int(c) for c in rng.integers(0, 90, 3))
        w = max(1, int(S * 0.014))
        for side in (-1, 1):
            d.ellipse(box(cx + side * eye_dx, eye_y, eye_r * 1.6, eye_r * 1.3), outline=frame, width=w)
        d.line([S * (cx - eye_dx + eye_r * 1.6), S * eye_y, S * (cx + eye_dx - eye_r * 1.6), S * eye_y], fill=frame, width=w)

    labels = {
        "Bald": style == "bald",
        "Bangs": style == "bangs",
        "Eyeglasses": glasses,
        "Smiling": smiling,
        **{name: style != "bald" and hair_name == name for name in HAIR},
    }
    attrs = np.array([labels[n] for n in ATTR_NAMES], dtype=np.int64)
    return im.resize((img_size, img_size), Image.Resampling.LANCZOS), attrs


def render_faces(n: int, img_size: int, *, seed: int = 0, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, S, S) uint8 images and (n, len(ATTR_NAMES)) 0/1 labels of one split."""
    if split not in SPLIT_IDS:
        raise ValueError(f"synthetic split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    images = np.empty((n, img_size, img_size, 3), dtype=np.uint8)
    attrs = np.empty((n, len(ATTR_NAMES)), dtype=np.int64)
    for i in range(n):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], i])
        im, attrs[i] = render_face(rng, img_size)
        images[i] = np.asarray(im)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(attrs)
