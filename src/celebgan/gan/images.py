"""Latents, generated images, their captions and image files: what the commands that look at a
generator share (sample.py, gan/directions.py, the judge, the progress grids of training)."""
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import math

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.functional import to_tensor
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from celebgan.errors import UserError
from celebgan.io import atomic_write
from celebgan.gan.labels import LabelTable, draw_rows
from celebgan.gan.module import GAN


def check_truncation(truncation: float | None, key: str = "truncation") -> None:
    """None (off) or a threshold > 0, in words a user can act on."""
    ok = truncation is None or (isinstance(truncation, (int, float)) and not isinstance(truncation, bool)
                                and math.isfinite(truncation) and truncation > 0)
    if not ok:
        raise UserError(f"{key}={truncation!r} must be a number > 0 (the truncated normal's threshold: 0.5 "
                        f"gives typical faces, 2 nearly the untruncated spread) or null for no truncation.")


def truncate(z: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """The truncation trick of BigGAN (Brock et al. 2019) for a generator without a mapping network:
    latents from N(0, 1) truncated to [-threshold, threshold] in every coordinate. Each normal draw is
    moved to the same quantile of the truncated normal (inverse CDF) rather than redrawn: the same
    distribution as BigGAN's resampling, while a seed keeps its faces (only pulled towards the
    typical one) and latents truncated a batch at a time equal those truncated at once."""
    if threshold is None:
        return z
    check_truncation(threshold)
    x = z.double()
    low = torch.special.ndtr(torch.tensor(-float(threshold), dtype=torch.float64))
    u = low + torch.special.ndtr(x) * (1 - 2 * low)  # the draw's quantile, within the kept interval
    return torch.special.ndtri(u).clamp_(-threshold, threshold).to(z.dtype)


def latents(n: int, nz: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """(n, nz, 1, 1) standard normal latents, the same for a seed on every machine (drawn on the CPU);
    truncation: the truncated normal's threshold (truncate), None for none."""
    return truncate(torch.randn(n, nz, 1, 1, generator=torch.Generator().manual_seed(seed)), truncation)


def latent_batches(n: int, nz: int, seed: int, batch_size: int,
                   truncation: float | None = None) -> Iterator[torch.Tensor]:
    """latents(n, nz, seed) as consecutive (<= batch_size, nz, 1, 1) batches, holding a few batches
    at most whatever n is.

    The batches are drawn from the seed's one generator, in calls of a multiple of 16 latents and a
    last call of at least that many: torch's CPU randn turns 16 uniforms at a time into normals and
    redraws a ragged end, so such calls concatenate to exactly what one call for all n draws."""
    generator = torch.Generator().manual_seed(seed)
    draw = -(-batch_size // 16) * 16
    pending, left = torch.empty(0, nz, 1, 1), n
    while left or len(pending):
        if len(pending) < batch_size and left:
            k = left if left < 2 * draw else draw  # the end in one call, as a single call draws it
            pending = torch.cat([pending, torch.randn(k, nz, 1, 1, generator=generator)])
            left -= k
            continue
        yield truncate(pending[:batch_size], truncation)
        pending = pending[batch_size:]


def requested_attributes(requested: Mapping | None, names: Sequence[str], key: str = "attributes") -> dict[str, float]:
    """{name: 0.0 or 1.0} from a user's {name: 0|1|true|false}, checked against the model's attributes
    (an unconditional model has none). None or {} asks for nothing."""
    if requested is None or (isinstance(requested, Mapping) and not requested):
        return {}
    if not names:
        raise UserError(f"{key}= needs a conditional model, and this checkpoint's is unconditional: train one "
                        "with data.attributes=[Smiling,Eyeglasses] (or all) and model=projection or model=acgan.")
    if not isinstance(requested, Mapping):
        raise UserError(f"{key}={requested!r} must be a mapping of attribute names to 0 or 1, e.g. "
                        f"{key}='{{{names[0]}: 1}}'.")
    unknown = [name for name in requested if name not in names]
    if unknown:
        raise UserError(f"{key}: {', '.join(map(str, unknown))} not among this model's attributes: {list(names)}.")
    bad = {name: value for name, value in requested.items() if value not in (0, 1)}  # True == 1, False == 0
    if bad:
        raise UserError(f"{key}: {bad} must be 0 or 1 (without or with the attribute).")
    return {name: float(value) for name, value in requested.items()}


def draw_conditions(names: Sequence[str], freqs: torch.Tensor, n: int, seed: int | None,
                    fixed: Mapping[str, float] | None = None, table: LabelTable | None = None,
                    key: str = "attributes") -> torch.Tensor | None:
    """(n, A) float 0/1 attributes for n faces of a conditional model, None for an unconditional one
    (no names): the `fixed` ones as asked, the others drawn from the training faces that agree with
    them (`table`, celebgan.gan.labels.draw_rows), or, without a table, each from its training
    frequency `freqs` (A,). Drawn by a generator of the seed's own (the latents' is another: a seed's
    latents are the same with or without attributes; seed=None: the global RNG)."""
    if not names:
        return None
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return draw_rows(table, names, freqs, n, fixed, generator, key)


def conditions(gan: GAN, n: int, seed: int, fixed: Mapping[str, float] | None = None) -> torch.Tensor | None:
    """draw_conditions for a GAN's attributes, from its label table (None for an unconditional GAN)."""
    return draw_conditions(gan.attr_names, gan.attr_frequencies, n, seed, fixed, gan.label_table)


def independent_conditions(gan: GAN, n: int, seed: int) -> torch.Tensor | None:
    """(n, A) attributes each drawn from its training frequency alone, as celebgan drew them before it
    kept a label table: the independent requests of obedience's second column."""
    return draw_conditions(gan.attr_names, gan.attr_frequencies, n, seed)


@torch.no_grad()
def generate(gan: GAN, z: torch.Tensor, batch_size: int = 256, progress: bool = False,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """(N, nz, 1, 1) latents [and (N, A) attributes of a conditional model] -> (N, 3, S, S) CPU images
    in [-1, 1], batch by batch."""
    chunks = z.split(batch_size)
    conds = labels.split(batch_size) if labels is not None else [None] * len(chunks)
    return torch.cat([gan.sample(c, y).cpu()
                      for c, y in tqdm(zip(chunks, conds), total=len(chunks), desc="generating", disable=not progress)])


def to_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """(N, 3, S, S) in [-1, 1] -> (3, H, W) in [0, 1], 2px gaps."""
    return make_grid(images, nrow=nrow, normalize=True, value_range=(-1, 1))


def column_centres(n: int, img_size: int, padding: int = 2) -> list[float]:
    """x of the centre of each of n columns of a to_grid grid, in pixels."""
    return [padding + c * (img_size + padding) + img_size / 2 for c in range(n)]


def enlarge(images: torch.Tensor, scale: int) -> torch.Tensor:
    """(N, 3, S, S) -> (N, 3, scale S, scale S): each pixel a scale x scale block (nearest), so small
    faces are seen as they are, not smoothed."""
    return images if scale == 1 else torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")


def caption(image: torch.Tensor, labels: Sequence[tuple[float, str]]) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (3, h + H, W): a white strip above the image, each label's text
    centred at its x (pixels). The font shrinks until neighbouring labels do not overlap."""
    width = image.shape[-1]
    xs = sorted(x for x, _ in labels)
    room = min([b - a for a, b in zip(xs, xs[1:])] + [float(width)]) - 4
    size = 14
    font = ImageFont.load_default(size)
    while size > 7 and max(font.getlength(text) for _, text in labels) > room:
        size -= 1
        font = ImageFont.load_default(size)
    strip = Image.new("RGB", (width, size + 6), "white")
    draw = ImageDraw.Draw(strip)
    for x, text in labels:
        draw.text((x, 3), text, fill="black", font=font, anchor="ma")
    return torch.cat([to_tensor(strip).to(image.dtype), image.cpu()], dim=1)


def save_png(grid: torch.Tensor, path: Path) -> Path:
    """(3, H, W) in [0, 1] -> a PNG at `path`, which holds the whole image or its previous content."""
    with atomic_write(path) as tmp:
        save_image(grid, tmp, format="png")
    return path
