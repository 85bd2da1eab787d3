"""Procedural faces that look like small, soft photographs: a dataset with real structure to learn
that needs no download.

Each image is drawn from its own random parameters (face shape and position, skin tone, hair style
and colour, eyes, brows, nose, smiling or neutral mouth, glasses, clothes, background, light). The
parts are soft masks (analytic shapes with a ramp of about a pixel at their edge) composited in
float32 at 2x the target size: a face ellipsoid lit by a random light, shadows in the eye sockets,
under the nose and the chin, strand texture in the hair, blurry blobs in the background. Then a
box downsample, a mild camera blur and sensor noise. Flat fills and hard edges would let a
discriminator tell these from any generator's output at once; photographs have neither.

Image i of a split depends only on (seed, split, i), so any subset is reproducible on its own.
"""
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from celebgan.errors import UserError

# Must be bumped whenever the pixels change: cached real features and attribute classifiers are keyed by it.
RENDERER_VERSION = 2

# The subset of CelebA's 40 attributes that these faces control, in CelebA's order.
ATTR_NAMES = ["Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses", "Gray_Hair", "Smiling"]
SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}

SKIN = [(250, 220, 195), (238, 194, 164), (222, 172, 130), (196, 136, 94), (142, 90, 62), (96, 62, 46)]
HAIR = {  # attribute -> base colour
    "Black_Hair": (34, 28, 26),
    "Brown_Hair": (104, 66, 40),
    "Blond_Hair": (222, 188, 118),
    "Gray_Hair": (168, 166, 164),
}
IRIS = [(70, 45, 25), (60, 100, 140), (80, 110, 60), (40, 30, 25)]


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1] of a size x size canvas: (X, Y), each (size, size)."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.broadcast_to(t[None, :], (size, size)), np.broadcast_to(t[:, None], (size, size))


@lru_cache(maxsize=32)
def _basis(size: int, k: int) -> np.ndarray:
    """(size, k) overlapping Gaussian bumps: B @ C @ B.T turns k x k coefficients into a smooth field."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    centres = np.linspace(-0.1, 1.1, k, dtype=np.float32)
    width = 1.2 / (k - 1)
    b = np.exp(-0.5 * ((t[:, None] - centres[None, :]) / (0.6 * width)) ** 2)
    return (b / b.sum(1, keepdims=True)).astype(np.float32)


def _field(rng: np.random.Generator, size: int, ky: int, kx: int) -> np.ndarray:
    """(size, size) smooth random field of about unit spread with ky x kx degrees of freedom."""
    coeffs = rng.standard_normal((ky, kx)).astype(np.float32)
    # einsum rather than @: these products are tiny, and BLAS threads stall when the cores are busy.
    rows = np.einsum("kl,jl->kj", coeffs, _basis(size, kx))  # (ky, size)
    f = np.einsum("ik,kj->ij", _basis(size, ky), rows)
    return f / (f.std() + 1e-6)


def _soft(sd: np.ndarray, edge: float) -> np.ndarray:
    """Coverage of a shape from its signed distance (negative inside): a ramp `edge` wide."""
    return np.clip(0.5 - sd / edge, 0.0, 1.0)


class _Canvas:
    """An RGB float32 canvas in [0, 1] with windows for small parts, so their cost scales with their area."""

    def __init__(self, size: int, rgb: np.ndarray):
        self.size = size
        self.rgb = rgb  # (size, size, 3)
        self.X, self.Y = _grid(size)
        self.px = 1.0 / size  # one canvas pixel in image units

    def window(self, cx: float, cy: float, rx: float, ry: float) -> tuple[slice, slice]:
        s, m = self.size, 3  # margin of a few pixels for the soft edges
        return (slice(max(0, int((cy - ry) * s) - m), min(s, int((cy + ry) * s) + m + 1)),
                slice(max(0, int((cx - rx) * s) - m), min(s, int((cx + rx) * s) + m + 1)))

    def xy(self, win=(slice(None), slice(None))) -> tuple[np.ndarray, np.ndarray]:
        return self.X[win], self.Y[win]

    def over(self, alpha: np.ndarray, colour, win=(slice(None), slice(None))):
        """Composite `colour` (RGB triple or (h, w, 3) layer) with coverage alpha (h, w) over the canvas."""
        a = alpha[..., None]
        dst = self.rgb[win]
        dst += a * (np.asarray(colour, dtype=np.float32) - dst)

    def multiply(self, factor: np.ndarray, win=(slice(None), slice(None))):
        """Shade by a per-pixel factor (h, w) or (h, w, 3)."""
        self.rgb[win] *= factor if factor.ndim == 3 else factor[..., None]


def _ellipse(X, Y, cx, cy, rx, ry, angle: float = 0.0):
    """Normalised coordinates (u, v), the radius d (1 on the outline) and an approximate signed distance."""
    dx, dy = X - cx, Y - cy
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    u, v = dx / rx, dy / ry
    d = np.sqrt(u * u + v * v)
    return u, v, d, (d - 1.0) * min(rx, ry)


def _blob(X, Y, cx, cy, sx, sy) -> np.ndarray:
    return np.exp(-0.5 * (((X - cx) / sx) ** 2 + ((Y - cy) / sy) ** 2))


def _capsule(X, Y, x0, y0, x1, y1, half_width) -> np.ndarray:
    """Signed distance to a line segment with round ends."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((X - x0) * dx + (Y - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.sqrt((X - x0 - t * dx) ** 2 + (Y - y0 - t * dy) ** 2) - half_width


def _lambert(u: np.ndarray, v: np.ndarray, light: np.ndarray, ambient: float, gain: float) -> np.ndarray:
    """Diffuse shading of an ellipsoid seen face-on at normalised coordinates (u, v)."""
    nz = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, 1.0))
    ndl = np.clip(u * light[0] + v * light[1] + nz * light[2], 0.0, None)
    return ambient + gain * ndl


def _warm(shade: np.ndarray) -> np.ndarray:
    """Skin shadows turn redder (light scattered under the skin): per-channel exponents on the shade."""
    s = np.clip(shade, 1e-3, None)[..., None]
    return s ** np.array([1.0, 1.12, 1.25], dtype=np.float32)


def _rgb(c) -> np.ndarray:
    return np.asarray(c, dtype=np.float32) / 255.0


def _jitter(rng: np.random.Generator, rgb, amount: int) -> np.ndarray:
    return np.clip(np.asarray(rgb) + rng.integers(-amount, amount + 1, 3), 0, 255)


def _camera_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, 3) image, edges replicated."""
    taps = np.arange(-2, 3, dtype=np.float32)
    k = np.exp(-0.5 * (taps / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(2, 2) if a == axis else (0, 0) for a in range(3)]
        p = np.pad(img, pad, mode="edge")
        n = img.shape[axis]
        img = sum(w * np.take(p, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return img


def render_face(rng: np.random.Generator, img_size: int) -> tuple[Image.Image, np.ndarray]:
    """One face as an RGB image of img_size x img_size, and its 0/1 labels in ATTR_NAMES order."""
    S = 2 * img_size if img_size >= 32 else 4 * img_size  # supersampled canvas, box-downsampled at the end
    edge = 2.0 / S  # soft edges about one output pixel wide
    X, Y = _grid(S)

    # Light: mostly from above and in front, from a random side; its strength varies per image.
    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.15), rng.uniform(0.6, 1.0)], dtype=np.float32)
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.4, 0.6)
    gain = rng.uniform(1.0, 1.15) - ambient  # full light at most a little above the albedo

    # Background: a gradient between two muted colours, brighter towards the light, plus blurry blobs.
    base = rng.integers(40, 230, 3).astype(np.float32)
    base = base + rng.uniform(0.2, 0.7) * (base.mean() - base)  # muted, some nearly grey
    c0, c1 = _rgb(base), _rgb(_jitter(rng, base, 40))
    theta = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + (X - 0.5) * np.cos(theta) + (Y - 0.5) * np.sin(theta), 0, 1)[..., None]
    bg = c0 + ramp * (c1 - c0)
    blobs = np.stack([_field(rng, S, 4, 4) for _ in range(3)], -1)
    bg = bg * (1.0 + 0.12 * _field(rng, S, 4, 4)[..., None]) + 0.025 * blobs
    bg *= (1.0 + 0.25 * light[0] * (X - 0.5) - 0.1 * (Y - 0.5))[..., None]
    cv = _Canvas(S, np.ascontiguousarray(bg, dtype=np.float32))

    # Face geometry.
    cx, cy = rng.uniform(0.44, 0.56), rng.uniform(0.48, 0.56)
    rx = rng.uniform(0.22, 0.29)
    ry = rx * rng.uniform(1.15, 1.4)
    taper = rng.uniform(0.0, 0.25)  # narrower chin
    skin = _rgb(_jitter(rng, SKIN[rng.integers(len(SKIN))], 10))
    hair_name = list(HAIR)[rng.integers(len(HAIR))]
    hair = _rgb(_jitter(rng, HAIR[hair_name], 12))
    style = rng.choice(["bald", "short", "long", "bangs"], p=[0.12, 0.38, 0.3, 0.2])
    strands = _field(rng, S, 4, max(8, S // 5))  # vertical streaks: many across, few down
    hair_tex = 1.0 + 0.14 * strands + 0.06 * _field(rng, S, 8, max(8, S // 3)) + 0.06 * _field(rng, S, 6, 6)

    # A soft shadow of the head on the background, away from the light.
    _, _, _, sd = _ellipse(X, Y, cx - 0.08 * light[0], cy - 0.05 * light[1], rx * 1.15, ry * 1.1)
    cv.multiply(1.0 - rng.uniform(0.1, 0.3) * _soft(sd, 0.12))

    def hair_shading(hx, hy, hrx, hry, win):
        Xw, Yw = cv.xy(win)
        u, v = (Xw - hx) / hrx, (Yw - hy) / hry
        shade = _lambert(u, v, light, ambient * 0.9, gain)
        sheen = 0.15 * np.exp(-0.5 * ((np.sqrt(u * u + v * v) - 0.7) / 0.12) ** 2) * np.clip(-v, 0, 1)
        return (hair * (shade * hair_tex[win] + sheen)[..., None]).astype(np.float32)

    # Long hair falls behind the neck onto the shoulders.
    if style == "long":
        hx, hy, hrx, hry = cx, cy + ry * 0.25, rx * 1.3, ry * 1.25
        win = cv.window(hx, hy, hrx, hry)
        Xw, Yw = cv.xy(win)
        _, v, _, sd = _ellipse(Xw, Yw, hx, hy, hrx, hry)
        ragged = 0.02 * strands[win] * np.clip(v, 0, 1)  # strand ends at the bottom
        cv.over(_soft(sd + ragged, edge), hair_shading(hx, hy, hrx, hry, win), win)

    # Clothes: shoulders as a lit ellipsoid with soft folds.
    clothes = rng.integers(25, 225, 3).astype(np.float32)
    clothes = _rgb(clothes + rng.uniform(0.0, 0.5) * (clothes.mean() - clothes))  # dyed cloth, not paint
    win = cv.window(cx, 1.08, rx * 1.9, 0.3)
    Xw, Yw = cv.xy(win)
    u, v, _, sd = _ellipse(Xw, Yw, cx, 1.08, rx * 1.9, 0.3)
    folds = 1.0 + 0.07 * _field(rng, S, 5, 8)[win]
    cloth = clothes * (_lambert(u, v, light, ambient, gain) * folds)[..., None]
    cv.over(_soft(sd, edge), cloth, win)

    # Neck: a cylinder, darker at its sides and in the chin's shadow.
    nx, ny, nrx, nry = cx, cy + ry * 0.9, rx * 0.45, ry * 0.5
    win = cv.window(nx, ny, nrx, nry)
    Xw, Yw = cv.xy(win)
    sd = np.maximum(np.abs(Xw - nx) - nrx, np.abs(Yw - ny) - nry)
    u = np.clip((Xw - nx) / nrx, -1, 1)
    shade = _lambert(u * 0.9, np.zeros_like(u), light, ambient, gain)
    shade = shade * (1.0 - 0.55 * np.exp(-np.clip(Yw - (cy + ry * 0.8), 0, None) / (0.25 * ry)))
    cv.over(_soft(sd, edge), skin * 0.95 * _warm(shade), win)

    # Ears.
    for side in (-1, 1):
        ex, ey, erx, ery = cx + side * rx * 0.97, cy + ry * 0.05, rx * 0.16, ry * 0.2
        win = cv.window(ex, ey, erx, ery)
        Xw, Yw = cv.xy(win)
        u, v, _, sd = _ellipse(Xw, Yw, ex, ey, erx, ery)
        shade = _lambert(0.6 * u + 0.5 * side, 0.6 * v, light, ambient, gain)
        shade = shade * (1.0 - 0.25 * _blob(u, v, 0, 0, 0.4, 0.6))  # the hollow of the ear
        cv.over(_soft(sd, edge), skin * 0.93 * _warm(shade), win)

    # Face: an ellipsoid with a tapered chin, lit, with low-frequency skin variation.
    win = cv.window(cx, cy, rx, ry)
    Xw, Yw = cv.xy(win)
    v = (Yw - cy) / ry
    u = (Xw - cx) / rx / (1.0 - taper * np.clip(v, 0, 1) ** 2)
    d = np.sqrt(u * u + v * v)
    face_alpha = _soft((d - 1.0) * rx, edge)
    shade = _lambert(u, v, light, ambient, gain)
    shade = shade * (1.0 + 0.035 * _field(rng, S, 6, 6)[win])
    face = skin * _warm(shade)
    blush = rng.uniform(0.0, 0.12)
    for side in (-1, 1):  # redder cheeks
        face += (blush * _blob(u, v, side * 0.5, 0.3, 0.22, 0.18))[..., None] * np.array([0.3, -0.25, -0.2], np.float32)
    cv.over(face_alpha, face, win)

    # Shadows carved into the face: eye sockets, under the nose, the philtrum, the side of the nose.
    eye_dx, eye_y = rx * rng.uniform(0.36, 0.46), cy - ry * rng.uniform(0.02, 0.14)
    eye_r = rx * rng.uniform(0.12, 0.17)
    ny = cy + ry * rng.uniform(0.12, 0.22)
    depth = rng.uniform(0.15, 0.3)
    dark = np.zeros_like(u)
    for side in (-1, 1):
        dark += depth * _blob(Xw, Yw, cx + side * eye_dx, eye_y - eye_r * 0.3, eye_r * 1.5, eye_r * 1.1)
    dark += 0.35 * _blob(Xw, Yw, cx, ny + eye_r * 0.35, rx * 0.13, eye_r * 0.3)
    dark += 0.15 * _blob(Xw, Yw, cx - np.sign(light[0]) * rx * 0.09, (eye_y + ny) / 2, rx * 0.05, (ny - eye_y) * 0.45)
    cv.multiply(_warm(1.0 - np.clip(dark, 0, 0.7) * face_alpha), win)
    bridge = 0.1 * _blob(Xw, Yw, cx + 0.02 * light[0], (eye_y + ny) / 2, rx * 0.05, (ny - eye_y) * 0.45)
    cv.multiply(1.0 + bridge * face_alpha, win)  # a highlight down the nose
    for side in (-1, 1):  # nostrils
        win_n = cv.window(cx + side * rx * 0.08, ny, rx * 0.05, rx * 0.04)
        Xn, Yn = cv.xy(win_n)
        cv.multiply(1.0 - 0.45 * _blob(Xn, Yn, cx + side * rx * 0.07, ny, rx * 0.04, rx * 0.025), win_n)

    # Eyes: white, iris, pupil, a dark lash line on top.
    iris = _rgb(IRIS[rng.integers(len(IRIS))])
    eye_light = ambient + gain * 0.6
    for side in (-1, 1):
        ex = cx + side * eye_dx
        win = cv.window(ex, eye_y, eye_r * 1.3, eye_r)
        Xw, Yw = cv.xy(win)
        _, _, _, sd = _ellipse(Xw, Yw, ex, eye_y, eye_r, eye_r * 0.62)
        white = _soft(sd, edge)
        cv.over(white, _rgb((232, 228, 222)) * eye_light, win)
        _, _, _, sd = _ellipse(Xw, Yw, ex, eye_y, eye_r * 0.52, eye_r * 0.52)
        cv.over(_soft(sd, edge) * white, iris * eye_light, win)
        _, _, _, sd = _ellipse(Xw, Yw, ex, eye_y, eye_r * 0.24, eye_r * 0.24)
        cv.over(_soft(sd, edge) * white, (0.04, 0.03, 0.03), win)
        _, v, _, sd = _ellipse(Xw, Yw, ex, eye_y, eye_r * 1.05, eye_r * 0.68)
        lash = _soft(np.abs(sd) - 0.25 * edge, edge) * (v < 0.15)
        cv.over(0.8 * lash, (0.12, 0.08, 0.07), win)

    # Brows.
    brow = hair * 0.7 if style != "bald" else skin * 0.55
    brow_lift = rng.uniform(1.6, 2.3)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        by = eye_y - eye_r * brow_lift
        win = cv.window(ex, by, eye_r * 1.2, eye_r * 0.5)
        Xw, Yw = cv.xy(win)
        _, _, _, sd = _ellipse(Xw, Yw, ex, by, eye_r * 1.15, 0.011, angle=-side * 0.12)
        cv.over(0.9 * _soft(sd, edge), brow * (ambient + gain * 0.5), win)

    # Mouth: a smile is an open arc with teeth, neutral is closed lips with a dark parting.
    smiling = bool(rng.random() < 0.5)
    my, mw = cy + ry * rng.uniform(0.45, 0.55), rx * rng.uniform(0.35, 0.5)
    lips = _rgb(_jitter(rng, (175, 80, 75), 20)) * 0.5 + skin * 0.5 * _rgb((220, 150, 150))
    mouth_light = ambient + gain * 0.7
    win = cv.window(cx, my, mw * 1.2, ry * 0.3)
    Xw, Yw = cv.xy(win)
    if smiling:
        top = my - ry * 0.08
        _, _, _, sd = _ellipse(Xw, Yw, cx, top, mw, ry * 0.24)
        upper_cut = Yw - top  # the flat top of the arc
        cv.over(_soft(np.maximum(sd, -upper_cut), edge), lips * mouth_light, win)
        _, _, _, sd = _ellipse(Xw, Yw, cx, top, mw * 0.88, ry * 0.2)
        cv.over(_soft(np.maximum(sd, -upper_cut + 0.5 * edge), edge), (0.22, 0.07, 0.07), win)
        u, _, _, sd = _ellipse(Xw, Yw, cx, top, mw * 0.85, ry * 0.18)
        teeth = _soft(np.maximum(sd, -upper_cut + 0.5 * edge), edge)
        # Wet enamel catches the light: front teeth are the brightest part of a face and often clip
        # to white; the side teeth recede into the mouth's shadow.
        enamel = rng.uniform(1.15, 1.35) * (1.0 - 0.45 * np.clip(u * u, 0, 1))
        cv.over(teeth, enamel[..., None] * np.array([1.0, 0.99, 0.96], np.float32), win)
        sd = _capsule(Xw, Yw, cx - mw * 0.9, top, cx + mw * 0.9, top, 0.3 * edge)
        cv.over(0.8 * _soft(sd, edge), lips * mouth_light, win)  # the upper lip
    else:
        _, _, _, sd = _ellipse(Xw, Yw, cx, my, mw * 0.85, ry * 0.05)
        cv.over(_soft(sd, edge), lips * mouth_light, win)
        sd = _capsule(Xw, Yw, cx - mw * 0.8, my, cx + mw * 0.8, my, 0.15 * edge)
        cv.over(0.7 * _soft(sd, edge), lips * 0.35, win)

    # Hair over the top of the head, down to a hairline on the forehead (or a fringe for bangs).
    if style != "bald":
        hx, hy, hrx, hry = cx, cy - ry * 0.1, rx * 1.08, ry * 1.0
        win = cv.window(hx, hy, hrx, hry)
        Xw, Yw = cv.xy(win)
        _, _, _, sd_outer = _ellipse(Xw, Yw, hx, hy, hrx, hry)
        fu, fv = (Xw - cx) / rx, (Yw - cy) / ry
        if style == "bangs":
            line = -0.3 + 0.12 * fu * fu + 0.05 * strands[win]  # a ragged fringe
        else:
            line = rng.uniform(-0.6, -0.45) + 0.35 * fu * fu
        top = _soft((fv - line) * ry, edge)
        inside_face = _soft((np.sqrt(fu * fu + fv * fv) - 1.0) * rx, edge)
        sides = (1.0 - inside_face) * _soft(Yw - (cy + ry * 0.05), edge)
        alpha = _soft(sd_outer, edge) * np.maximum(top, sides)
        # The hair casts a soft shadow onto the forehead just below it.
        shadow = _soft((fv - line) * ry - 0.04, 0.06) * inside_face * (1.0 - alpha)
        cv.multiply(1.0 - 0.25 * shadow, win)
        cv.over(alpha, hair_shading(hx, hy, hrx, hry, win), win)

    # Glasses: two rims, a bridge, arms to the ears, faintly reflecting lenses.
    glasses = bool(rng.random() < 0.3)
    if glasses:
        frame = _rgb(rng.integers(0, 90, 3))
        half = max(0.007, 0.6 * edge)
        win = cv.window(cx, eye_y, rx * 1.05, eye_r * 1.6)
        Xw, Yw = cv.xy(win)
        rims = np.full(Xw.shape, np.inf, np.float32)
        for side in (-1, 1):
            ex = cx + side * eye_dx
            _, v, _, sd = _ellipse(Xw, Yw, ex, eye_y, eye_r * 1.6, eye_r * 1.3)
            cv.over(0.12 * _soft(sd, edge) * np.clip(-v, 0, 1), (1.0, 1.0, 1.0), win)  # reflection
            rims = np.minimum(rims, np.abs(sd) - half)
            rims = np.minimum(rims, _capsule(Xw, Yw, ex + side * eye_r * 1.6, eye_y - eye_r * 0.2,
                                             cx + side * rx * 0.98, eye_y - eye_r * 0.1, half * 0.8))
        inner = eye_dx - eye_r * 1.6
        rims = np.minimum(rims, _capsule(Xw, Yw, cx - inner, eye_y, cx + inner, eye_y, half))  # the bridge
        cv.over(_soft(rims, edge), frame * (ambient + gain * 0.5), win)

    labels = {
        "Bald": style == "bald",
        "Bangs": style == "bangs",
        "Eyeglasses": glasses,
        "Smiling": smiling,
        **{name: style != "bald" and hair_name == name for name in HAIR},
    }
    attrs = np.array([labels[n] for n in ATTR_NAMES], dtype=np.int64)

    # The camera: exposure and white balance, vignetting, a box downsample, blur, sensor noise.
    img = cv.rgb * rng.uniform(0.88, 1.08) * (1.0 + rng.uniform(-0.04, 0.04, 3)).astype(np.float32)
    img *= (1.0 - 0.25 * ((X - 0.5) ** 2 + (Y - 0.5) ** 2))[..., None]
    f = S // img_size
    img = img.reshape(img_size, f, img_size, f, 3).mean((1, 3))
    img = _camera_blur(img, rng.uniform(0.3, 0.6))
    noise = rng.uniform(0.004, 0.016)
    img = img + noise * rng.standard_normal(img.shape).astype(np.float32) * np.sqrt(np.clip(img, 0.05, 1.0))
    pixels = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB"), attrs


def render_faces(n: int, img_size: int, *, seed: int = 0, split: str = "train",
                 start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, S, S) uint8 images and (n, len(ATTR_NAMES)) 0/1 labels of one split: faces start
    .. start + n - 1 (each face depends on its index alone, so a render can be split)."""
    if split not in SPLIT_IDS:  # also a metrics.real_split or sample split of a synthetic run
        raise UserError(f"split {split!r} is not one of the synthetic faces' splits {list(SPLIT_IDS)}.")
    images = np.empty((n, img_size, img_size, 3), dtype=np.uint8)
    attrs = np.empty((n, len(ATTR_NAMES)), dtype=np.int64)
    for i in range(n):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], start + i])
        im, attrs[i] = render_face(rng, img_size)
        images[i] = np.asarray(im)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(attrs)
