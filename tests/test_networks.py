import pytest
import torch

from celebgan.gan.networks import Discriminator, Generator


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("img_size", [16, 32, 64, 128])
def test_shapes_and_ranges(img_size):
    g, d = Generator(img_size=img_size, nz=100, ngf=8), Discriminator(img_size=img_size, ndf=8)
    x = g(torch.randn(3, 100, 1, 1))
    assert x.shape == (3, 3, img_size, img_size)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(g.eval()(torch.ones(2, 100)), g(torch.ones(2, 100, 1, 1)))  # (B, nz) accepted
    assert d(x).shape == (3,)


def test_block_count_follows_img_size():
    def convs(m):
        return sum(isinstance(x, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for x in m.modules())

    assert convs(Generator(img_size=32)) == 4 and convs(Generator(img_size=64)) == 5
    assert convs(Discriminator(img_size=32)) == 4 and convs(Discriminator(img_size=64)) == 5


def test_parameter_counts_match_reference_dcgan():
    # pytorch/examples' dcgan at 64px with nz=100, ngf=ndf=64.
    assert n_params(Generator(img_size=64, nz=100, ngf=64)) == 3_576_704
    assert n_params(Discriminator(img_size=64, ndf=64)) == 2_765_568


@pytest.mark.parametrize("img_size", [0, 24, 48, 256])
def test_unsupported_img_size_is_a_clear_error(img_size):
    with pytest.raises(ValueError, match=rf"img_size={img_size} is not supported.*data.img_size"):
        Generator(img_size=img_size)
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(img_size=img_size)


def test_paper_initialisation_statistics():
    torch.manual_seed(0)
    g = Generator(img_size=64)
    conv_w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    bn = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn_w = torch.cat([m.weight.flatten() for m in bn])
    assert abs(conv_w.mean()) < 1e-3 and abs(conv_w.std() - 0.02) < 1e-3
    assert abs(bn_w.mean() - 1) < 5e-3 and abs(bn_w.std() - 0.02) < 5e-3
    assert all(torch.count_nonzero(m.bias) == 0 for m in bn)


def test_spectral_norm_wraps_every_conv_and_drops_batchnorm():
    d = Discriminator(img_size=32, spectral_norm=True, batch_norm=False)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(hasattr(m, "parametrizations") for m in convs)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    # Initialised as the paper says: the trainable tensor is N(0, 0.02) ...
    w = torch.cat([m.parametrizations.weight.original.flatten() for m in convs])
    assert abs(w.std() - 0.02) < 2e-3
    # ... and after a few power iterations each conv's largest singular value is about 1.
    d.train()
    for _ in range(20):
        d(torch.randn(2, 3, 32, 32))
    sigma = torch.linalg.matrix_norm(convs[1].weight.detach().flatten(1), ord=2)
    assert abs(sigma - 1) < 0.05


def test_dropout_only_when_asked():
    assert not any(isinstance(m, torch.nn.Dropout2d) for m in Discriminator(img_size=32).modules())
    assert sum(isinstance(m, torch.nn.Dropout2d) for m in Discriminator(img_size=32, dropout=0.3).modules()) == 3
