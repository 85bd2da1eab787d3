"""DCGAN generator and discriminator (Radford et al. 2016), sized from the image size."""
import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from celebgan.errors import UserError, check_number, check_whole

SUPPORTED_SIZES = (16, 32, 64, 128)


def num_stages(img_size: int) -> int:
    """Stride-2 stages between 4x4 and img_size (64px -> 4), or a clear error."""
    if img_size not in SUPPORTED_SIZES:
        raise UserError(
            f"img_size={img_size} is not supported: DCGAN needs a power of two in "
            f"{SUPPORTED_SIZES}. Set data.img_size to one of these (32 and 64 are the presets)."
        )
    return int(math.log2(img_size)) - 2


def check_num_attrs(network: str, num_attrs: int | None) -> None:
    """A conditional network's attribute count: set from the data when the model is built for it
    (gan.module.attribute_kwargs, which celebgan.train and checkpoint.load_gan pass)."""
    if not isinstance(num_attrs, int) or num_attrs < 1:
        raise UserError(f"{network} needs the number of attributes it is conditioned on (got num_attrs={num_attrs}): "
                        "build the model with celebgan.gan.module.attribute_kwargs, as celebgan.train does from "
                        "data.attributes (e.g. data.attributes=[Smiling,Eyeglasses]).")


class Generator(nn.Module):
    """z (B, nz, 1, 1) -> image (B, nc, S, S) in [-1, 1].

    (ConvTranspose-BatchNorm-ReLU) x k then ConvTranspose-Tanh; the widths halve from
    ngf * 2^(k-1) at 4x4 down to ngf, so 64px gives the paper's 512-256-128-64.
    """

    def __init__(self, *, img_size: int = 64, nz: int = 100, ngf: int = 64, nc: int = 3):
        super().__init__()
        for key, value in (("nz", nz), ("ngf", ngf), ("nc", nc)):
            check_whole(f"model.generator.{key}", value, 1)
        self.img_size, self.nz = img_size, nz
        n = num_stages(img_size)
        width = ngf * 2 ** (n - 1)
        layers = [nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # labels: (B, A) attributes, which an unconditional G ignores (the GAN passes them to any G).
        if z.dim() == 2:  # accept (B, nz) as well as (B, nz, 1, 1)
            z = z[:, :, None, None]
        return self.main(z)


class ConditionalGenerator(Generator):
    """(z (B, nz, 1, 1), labels (B, A) in {0, 1}) -> image (B, nc, S, S) in [-1, 1].

    The labels' embedding, an affine map of the multi-hot vector (a learned (embed_dim,) vector,
    plus one more for each attribute present), is concatenated to z: the cGAN/DCGAN-era
    conditioning, one extra linear map in front of DCGAN's unchanged G, so conditional and
    unconditional runs differ in the conditioning alone. conditional_bn=True also makes every hidden
    BatchNorm conditional (ConditionalBatchNorm2d), the generator of the projection discriminator's
    paper (Miyato & Koyama 2018): the labels then reach every resolution, not only the 4x4 input.
    num_attrs: A, the data's chosen attributes (data.attributes), filled in when the model is built
    for its data (celebgan.train, checkpoint.load_gan).
    """

    def __init__(self, *, num_attrs: int, embed_dim: int = 32, embed_std: float = 0.02, conditional_bn: bool = False,
                 img_size: int = 64, nz: int = 100, ngf: int = 64, nc: int = 3):
        check_num_attrs("A conditional generator", num_attrs)
        check_whole("model.generator.embed_dim", embed_dim, 1)
        check_number("model.generator.embed_std", embed_std, 0)
        if not isinstance(conditional_bn, bool):
            raise UserError(f"model.generator.conditional_bn must be true or false (got {conditional_bn!r})")
        super().__init__(img_size=img_size, nz=nz + embed_dim, ngf=ngf, nc=nc)
        if conditional_bn:  # after the paper's init of the unconditional layers, so theirs is unchanged
            for i, layer in enumerate(self.main):
                if isinstance(layer, nn.BatchNorm2d):
                    self.main[i] = ConditionalBatchNorm2d(layer.num_features, num_attrs)
                    with torch.no_grad():  # gamma and beta keep the paper's init, drawn above
                        self.main[i].weight.copy_(layer.weight)
                        self.main[i].bias.copy_(layer.bias)
        self.nz, self.num_attrs = nz, num_attrs  # nz: the latent's size, as callers draw it
        # e(y) = W y + b. The bias gives the label vector of all zeros (none of the attributes) a learned
        # vector of its own, as every other one has, rather than the origin, where z alone drives G.
        self.embed = nn.Linear(num_attrs, embed_dim, bias=True)
        # N(0, 0.02), DCGAN's init: the labels begin as a whisper under z and G learns how loud they
        # get. Started at z's scale (std 1), G leaned on the labels and collapsed per label set: on the
        # synthetic faces at 80,000 images, FID (500 images) 177 for projection against 95 at 0.02 and
        # 82 for the unconditional high_lr (benchmarks/RESULTS.md, "Faces on request").
        nn.init.normal_(self.embed.weight, 0.0, embed_std)
        nn.init.normal_(self.embed.bias, 0.0, embed_std)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            raise ValueError("a conditional generator needs labels (B, num_attrs) with z; "
                             "GAN.draw_labels(n) draws them from the data's frequencies")
        z = z.reshape(len(z), self.nz)
        embedded = self.embed(labels.to(self.embed.weight.dtype))  # (B, embed_dim)
        x = torch.cat([z, embedded], dim=1)[:, :, None, None]
        for layer in self.main:
            x = layer(x, labels) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return x


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift depend on the labels (de Vries et al. 2017; Miyato & Koyama
    2018's G): x_hat * (gamma + W_g y) + (beta + W_b y), for multi-hot labels y (B, A). gamma and beta
    are BatchNorm's own (ConditionalGenerator gives them the paper's init); W_g and W_b (C, A) start at zero, so
    the layer starts as the unconditional BatchNorm and each attribute present learns its own
    offsets. The statistics are the batch's, shared by all label sets (an affine-free BatchNorm2d,
    which DDP's SyncBatchNorm conversion and the G-statistics averaging see as any other)."""

    def __init__(self, num_features: int, num_attrs: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_features, affine=False)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        # Zeros drawn from no generator: the layers around keep the init they have without it.
        self.embed_weight = nn.Parameter(torch.zeros(num_features, num_attrs))
        self.embed_bias = nn.Parameter(torch.zeros(num_features, num_attrs))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        y = labels.to(x.dtype)
        scale = self.weight + y @ self.embed_weight.T  # (B, C)
        shift = self.bias + y @ self.embed_bias.T
        return self.norm(x) * scale[:, :, None, None] + shift[:, :, None, None]


class Gain(nn.Module):
    """A parametrization that multiplies a weight by a constant: over spectral norm, each layer's
    Lipschitz bound becomes `gain` instead of 1 (SN-GAN's one hyper-parameter, the Lipschitz constant)."""

    def __init__(self, gain: float):
        super().__init__()
        self.gain = gain

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.gain


def gained(module: nn.Module, gain: float) -> nn.Module:
    if gain != 1.0:  # 1: spectral norm alone, the parametrization list unchanged
        torch.nn.utils.parametrize.register_parametrization(module, "weight", Gain(gain))
    return module


class Discriminator(nn.Module):
    """image (B, nc, S, S) -> logit (B,).

    Conv-LeakyReLU(0.2), then (Conv-BatchNorm-LeakyReLU) x k, then a 4x4 Conv to one logit.
    spectral_norm wraps every conv; batch_norm=False drops the BatchNorms (SNGAN's D has none);
    dropout adds spatial dropout (Dropout2d) after each hidden block. slope: the LeakyReLUs'
    negative slope (DCGAN 0.2, SN-GAN 0.1). sn_gain: with spectral_norm, each conv's weight is
    W / sigma(W) * sn_gain, its Lipschitz bound sn_gain (1: SN as published). stride1_convs: a 3x3 stride-1 conv (same width) after
    each stride-2 block, SN-GAN's CNN discriminator layout (c4s2 then c3s1 at every resolution):
    about 28% more D FLOPs, 7 convs instead of 4 at 32px.
    """

    def __init__(
        self,
        *,
        img_size: int = 64,
        ndf: int = 64,
        nc: int = 3,
        spectral_norm: bool = False,
        batch_norm: bool = True,
        dropout: float = 0.0,
        slope: float = 0.2,
        stride1_convs: bool = False,
        sn_gain: float = 1.0,
    ):
        super().__init__()
        check_number("model.discriminator.slope", slope, 0, below=1)
        check_number("model.discriminator.sn_gain", sn_gain, 0, above=True)
        for key, value in (("ndf", ndf), ("nc", nc)):
            check_whole(f"model.discriminator.{key}", value, 1)
        check_number("model.discriminator.dropout", dropout, 0, below=1, note=" (0 is off)")
        self.img_size = img_size
        n = num_stages(img_size)
        sn = (lambda m: gained(_spectral_norm(m), sn_gain)) if spectral_norm else (lambda m: m)

        def block(c_in: int, c_out: int, norm: bool) -> list[nn.Module]:
            layers = [sn(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False))]
            if norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(slope, inplace=True))
            if stride1_convs:
                layers += [sn(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)), nn.LeakyReLU(slope, inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout))
            return layers

        layers = block(nc, ndf, norm=False)
        width = ndf
        for _ in range(n - 1):
            layers += block(width, width * 2, norm=batch_norm)
            width *= 2
        layers.append(sn(nn.Conv2d(width, 1, 4, 1, 0, bias=False)))
        self.main = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # labels: (B, A) attributes, which an unconditional D ignores (the GAN passes them to any D).
        return self.main(x).flatten()  # (B,)


class ProjectionDiscriminator(Discriminator):
    """(image (B, nc, S, S), labels (B, A) in {0, 1}) -> logit (B,), conditioned by projection
    (Miyato & Koyama 2018):

        logit = psi(phi(x)) + sum_a s_a <E_a, h(x)>  =  psi(phi(x)) + s . (E h(x))

    phi(x): D's (B, C, 4, 4) features before its last 4x4 conv; psi: that conv (DCGAN's own head,
    unchanged); h(x): phi(x) summed over its 4x4 positions (B, C), the paper's global sum pooling;
    E: (A, C), one learned vector per attribute. Spectrally normalised with the convs when
    spectral_norm is on.

    label_coding: what s is. "binary": s = y, so an attribute adds its inner product when present
    and nothing when absent (the paper's one-hot projection read per attribute). "signed": s = 2y - 1,
    so every attribute adds +<E_a, h> when present and -<E_a, h> when absent: each sample trains
    every E_a, not only the samples that have attribute a, which matters for rare attributes (a
    fringe on one synthetic face in five). Both span the same functions (the difference is a
    constant vector that psi can absorb); they train differently.
    """

    LABEL_CODINGS = ("signed", "binary")

    def __init__(self, *, num_attrs: int, img_size: int = 64, ndf: int = 64, nc: int = 3,
                 spectral_norm: bool = False, batch_norm: bool = True, dropout: float = 0.0,
                 slope: float = 0.2, stride1_convs: bool = False, sn_gain: float = 1.0,
                 label_coding: str = "signed"):
        check_num_attrs("A projection discriminator", num_attrs)
        if label_coding not in self.LABEL_CODINGS:
            raise UserError(f"model.discriminator.label_coding={label_coding!r} is not one of "
                            f"{', '.join(self.LABEL_CODINGS)}: signed (every attribute adds +/- its "
                            "projection) or binary (only the attributes present add theirs).")
        super().__init__(img_size=img_size, ndf=ndf, nc=nc, spectral_norm=spectral_norm,
                         batch_norm=batch_norm, dropout=dropout, slope=slope, stride1_convs=stride1_convs,
                         sn_gain=sn_gain)
        self.num_attrs = num_attrs
        self.label_coding = label_coding
        width = self.main[-1].in_channels
        embed = nn.Linear(num_attrs, width, bias=False)  # weight (C, A): column a is E_a
        nn.init.normal_(embed.weight, 0.0, 0.02)
        self.embed = _spectral_norm(embed) if spectral_norm else embed

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            raise ValueError("a projection discriminator needs labels (B, num_attrs) with the images")
        features = self.main[:-1](x)  # phi(x): (B, C, 4, 4)
        logits = self.main[-1](features).flatten()  # psi(phi(x)): (B,)
        codes = labels.to(features.dtype)
        if self.label_coding == "signed":
            codes = 2 * codes - 1
        projected = self.embed(codes)  # E^T s: (B, C)
        return logits + (projected * features.sum((2, 3))).sum(1)


class ACGANDiscriminator(Discriminator):
    """image (B, nc, S, S) -> (logit (B,), attribute logits (B, A)): AC-GAN's D (Odena et al. 2017),
    DCGAN's D with a second head, a 4x4 conv from the same features to A attribute logits. The
    attributes are multi-hot, so the classifier is A independent sigmoids (the GAN's BCE), not a
    softmax over A classes. D itself does not read the labels: the classifier's loss does.
    """

    def __init__(self, *, num_attrs: int, img_size: int = 64, ndf: int = 64, nc: int = 3,
                 spectral_norm: bool = False, batch_norm: bool = True, dropout: float = 0.0,
                 slope: float = 0.2, stride1_convs: bool = False, sn_gain: float = 1.0):
        check_num_attrs("An auxiliary-classifier discriminator", num_attrs)
        super().__init__(img_size=img_size, ndf=ndf, nc=nc, spectral_norm=spectral_norm,
                         batch_norm=batch_norm, dropout=dropout, slope=slope, stride1_convs=stride1_convs,
                         sn_gain=sn_gain)
        self.num_attrs = num_attrs
        sn = _spectral_norm if spectral_norm else (lambda m: m)
        self.classifier = sn(nn.Conv2d(self.main[-1].in_channels, num_attrs, 4, 1, 0, bias=True))
        init_weights(self.classifier)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.main[:-1](x)  # (B, C, 4, 4)
        return self.main[-1](features).flatten(), self.classifier(features).flatten(1)  # (B,), (B, A)


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """The paper's init: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            # Under spectral norm the trainable tensor is the parametrization's `original`.
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
