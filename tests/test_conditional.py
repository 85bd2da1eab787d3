"""Attribute-conditional generation: data.attributes, the conditional networks by hand, and
model=projection / model=acgan composed with objectives, penalties, DiffAugment, bf16, resume and
the checkpoint readers."""
import math

import lightning as L
import pytest
import torch
from torch import nn
from conftest import ATTRS, TINY, compose_config, fit_steps, make_celeba

import celebgan
from celebgan.data import prepared as prep
from celebgan.data.batches import ArrayFaces
from celebgan.data.celeba import list_images
from celebgan.data.modules import CelebADataModule, ImageFiles, SyntheticDataModule
from celebgan.data.synthetic import ATTR_NAMES, render_faces
from celebgan.errors import UserError
from celebgan.gan.images import latents
from celebgan.gan.losses import attribute_bce
from celebgan.gan.module import attribute_kwargs, conditional_config
from celebgan.gan.networks import (ACGANDiscriminator, ConditionalBatchNorm2d, ConditionalGenerator,
                                   ProjectionDiscriminator)
from celebgan.run.checkpoint import load_gan
from celebgan.train import train

TWO = "data.attributes=[Smiling,Eyeglasses]"


# --- data.attributes -------------------------------------------------------------------------------

def synthetic(**kw) -> SyntheticDataModule:
    m = SyntheticDataModule(**{"num_images": 32, "img_size": 16, "batch_size": 8, **kw})
    m.setup("fit")
    return m


def test_synthetic_batches_carry_the_chosen_columns_in_the_chosen_order():
    _, every = render_faces(32, 16, seed=0, split="train")
    m = synthetic(attributes=["Smiling", "Bald"])
    assert m.attr_names == ["Smiling", "Bald"] and m.data_attr_names == ATTR_NAMES
    columns = [ATTR_NAMES.index("Smiling"), ATTR_NAMES.index("Bald")]
    assert torch.equal(m.train_set.attrs, every[:, columns])
    _, attrs = next(iter(m.train_dataloader()))
    assert attrs.shape == (8, 2)
    torch.testing.assert_close(m.attr_frequencies(), every[:, columns].float().mean(0))
    assert synthetic(attributes="all").attr_names == ATTR_NAMES
    assert synthetic(attributes="Smiling").attr_names == ["Smiling"]  # one name alone


def test_no_attributes_by_default_batches_carry_zero_columns():
    m = synthetic()
    _, attrs = next(iter(m.train_dataloader()))
    assert attrs.shape == (8, 0) and m.attr_names == [] and m.attr_frequencies().shape == (0,)
    assert m.eval_dataset("valid", 4)[0][1].shape == (len(ATTR_NAMES),)  # the classifier's: all of them


def test_a_name_the_faces_lack_is_one_error_listing_theirs():
    with pytest.raises(UserError, match="Male is not among this data's attributes, which are: Bald, Bangs"):
        SyntheticDataModule(num_images=32, img_size=16, attributes=["Smiling", "Male"])


@pytest.mark.parametrize("value, words", [(["Smiling", "Smiling"], "more than once"), (5, "must be null"),
                                          ([], "must be null")])
def test_malformed_attribute_settings_are_refused(value, words):
    with pytest.raises(UserError, match=words):
        SyntheticDataModule(num_images=32, img_size=16, attributes=value)


@pytest.mark.parametrize("layout", ["torchvision", "kaggle"])
def test_celeba_image_files_carry_the_chosen_columns(tmp_path, layout):
    make_celeba(tmp_path, layout)
    m = CelebADataModule(root=str(tmp_path), img_size=16, batch_size=2, num_workers=0, attributes=["Smiling", "Bald"])
    m.setup("fit")
    assert isinstance(m.train_set, ImageFiles) and m.attr_names == ["Smiling", "Bald"]
    _, attrs, names = list_images(tmp_path, "train")
    expected = attrs[:, [names.index("Smiling"), names.index("Bald")]]
    assert torch.equal(m.train_set.attrs, expected)
    torch.testing.assert_close(m.attr_frequencies(), expected.float().mean(0))
    assert next(iter(m.train_dataloader()))[1].shape == (2, 2)


def test_celeba_prepared_arrays_carry_the_chosen_columns(celeba_root, tmp_path):
    out = tmp_path / "prepared"
    prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, progress=False)
    m = CelebADataModule(root=str(celeba_root), img_size=16, batch_size=2, num_workers=0, prepared_dir=str(out),
                         attributes=["Eyeglasses"])
    m.setup("fit")
    assert isinstance(m.train_set, ArrayFaces)
    _, attrs, names = list_images(celeba_root, "train")
    assert torch.equal(m.train_set.attrs.long(), attrs[:, [names.index("Eyeglasses")]])


def test_a_celeba_name_it_lacks_fails_at_setup_before_any_decoding(celeba_root, tmp_path, monkeypatch):
    m = CelebADataModule(root=str(celeba_root), img_size=16, batch_size=2, num_workers=0, attributes=["Blond_Hair"],
                         prepared=True, prepared_dir=str(tmp_path / "prepared"))
    monkeypatch.setattr("celebgan.data.modules.build", lambda *a, **k: pytest.fail("the split was decoded"))
    with pytest.raises(UserError, match="Blond_Hair is not among .* " + ", ".join(ATTRS)):
        m.setup("fit")


def test_train_refuses_a_name_before_it_trains(tmp_path):
    with pytest.raises(UserError, match="Male is not among"):
        train(compose_config([*TINY, "model=projection", "data.attributes=[Male]"], tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- the networks and the AC-GAN loss by hand ------------------------------------------------------

@pytest.mark.parametrize("coding", ["binary", "signed"])
def test_projection_logit_by_hand(coding):
    # psi(phi(x)) + s . (E h(x)), h = phi(x) summed over its 4x4 positions; s = y (binary) or 2y - 1 (signed).
    d = ProjectionDiscriminator(num_attrs=2, img_size=16, ndf=1, batch_norm=False, label_coding=coding)  # C = 2
    psi = nn.Conv2d(2, 1, 4, 1, 0, bias=False)
    d.main = nn.Sequential(nn.Identity(), psi)  # phi(x) = x: the features are given
    with torch.no_grad():
        psi.weight.fill_(0.1)
        d.embed.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # (C, A): E_0 = (1, 3), E_1 = (2, 4)
    x = torch.stack([torch.ones(4, 4), torch.full((4, 4), 0.5)])[None].repeat(3, 1, 1, 1)  # h = (16, 8)
    labels = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    psi_value = 0.1 * (16 + 8)
    e0, e1 = 1 * 16 + 3 * 8, 2 * 16 + 4 * 8  # <E_0, h>, <E_1, h>
    if coding == "binary":  # absent attributes add nothing
        expected = [psi_value, psi_value + e0, psi_value + e0 + e1]
    else:  # absent attributes subtract theirs
        expected = [psi_value - e0 - e1, psi_value + e0 - e1, psi_value + e0 + e1]
    torch.testing.assert_close(d(x, labels), torch.tensor(expected))


def test_projection_refuses_an_unknown_label_coding():
    with pytest.raises(UserError, match="label_coding='onehot' is not one of signed, binary"):
        ProjectionDiscriminator(num_attrs=2, img_size=16, ndf=1, label_coding="onehot")


def test_attribute_bce_by_hand():
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])

    def softplus(v: float) -> float:
        return math.log1p(math.exp(v))

    # -y log sigmoid(l) - (1 - y) log(1 - sigmoid(l)) = softplus(l) - y l, averaged over the four.
    expected = (softplus(2) - 2 + softplus(-1) + softplus(0) + softplus(3) - 3) / 4
    assert attribute_bce(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_conditional_networks_shapes_and_labels():
    torch.manual_seed(0)
    g = ConditionalGenerator(num_attrs=3, img_size=16, nz=8, ngf=4).eval()
    z = torch.randn(2, 8, 1, 1)
    a, b = g(z, torch.zeros(2, 3)), g(z, torch.ones(2, 3))
    assert a.shape == (2, 3, 16, 16) and not torch.allclose(a, b)  # the labels change the image
    with pytest.raises(ValueError, match="needs labels"):
        g(z)
    logits, attr_logits = ACGANDiscriminator(num_attrs=3, img_size=16, ndf=4)(a)
    assert logits.shape == (2,) and attr_logits.shape == (2, 3)
    for unset in (0, None):  # a conditional preset built without attribute_kwargs
        with pytest.raises(UserError, match=f"num_attrs={unset}.*data.attributes"):
            ConditionalGenerator(num_attrs=unset, img_size=16)



def test_conditional_batchnorm_carries_the_labels_to_every_resolution():
    torch.manual_seed(0)
    plain = ConditionalGenerator(num_attrs=3, img_size=16, nz=8, ngf=4)
    torch.manual_seed(0)
    g = ConditionalGenerator(num_attrs=3, img_size=16, nz=8, ngf=4, conditional_bn=True)
    cbn = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(cbn) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()) == 2
    # From one seed, every parameter the two share is equal (the BatchNorms' gamma and beta too), and
    # the labels' offsets start at zero: G with conditional BatchNorm starts as the plain one.
    for name, weight in plain.state_dict().items():
        if name in g.state_dict():
            assert torch.equal(g.state_dict()[name], weight), name
    z, labels = torch.randn(4, 8, 1, 1), torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1]]).float()
    with torch.no_grad():
        assert torch.allclose(g(z, labels), plain(z, labels), atol=1e-6)
        g.embed.weight.zero_()  # the labels now reach G through the BatchNorms alone
        g.embed.bias.zero_()
        g.eval()
        same = g(z.repeat(1, 1, 1, 1), labels)
        assert torch.allclose(same[0], g(z[:1], labels[1:2])[0], atol=1e-6)  # zero offsets: labels ignored
        for layer in cbn:
            layer.embed_weight.normal_(0, 0.5)
            layer.embed_bias.normal_(0, 0.5)
        shifted = g(z[:1].repeat(4, 1, 1, 1), labels)
    assert all(not torch.allclose(shifted[0], shifted[i]) for i in (1, 2, 3))
    out = g.train()(z, labels)
    out.square().mean().backward()
    assert all(layer.embed_weight.grad.abs().sum() > 0 for layer in cbn)

# --- the training step -----------------------------------------------------------------------------

class Record(L.Callback):
    """Every G and D call of the first training step: its inputs and outputs, and the batch's labels."""

    def __init__(self):
        self.g_calls, self.d_calls, self.batch_labels = [], [], None

    def on_train_batch_start(self, trainer, gan, batch, batch_idx):
        if batch_idx == 0:
            self.batch_labels = batch[1].float().clone()
            self.hooks = [gan.generator.register_forward_hook(lambda m, i, o: self.g_calls.append(i)),
                          gan.discriminator.register_forward_hook(lambda m, i, o: self.d_calls.append((i, o)))]

    def on_train_batch_end(self, trainer, gan, outputs, batch, batch_idx):
        if batch_idx == 0:
            for hook in self.hooks:
                hook.remove()


def conditional_fit(steps: int, *overrides: str, callbacks=(), on_start=None):
    return fit_steps(compose_config([*TINY, *overrides], "unused"), steps, callbacks=callbacks, on_start=on_start)


def test_acgan_losses_add_the_classifier_on_real_for_d_and_asked_for_labels_for_g():
    record = Record()
    gan, trainer = conditional_fit(1, "model=acgan", TWO, callbacks=[record])
    labels = record.batch_labels
    (z, g_labels), = record.g_calls
    assert torch.equal(g_labels, labels)  # fake i is asked for the labels of real face i
    (_, (_, real_attr_logits)), _, (_, (_, fake_attr_logits)) = record.d_calls  # D: real, fake; G: fake
    logged = trainer.callback_metrics
    assert logged["train/d_aux"].item() == pytest.approx(attribute_bce(real_attr_logits, labels).item(), rel=1e-5)
    assert logged["train/g_aux"].item() == pytest.approx(attribute_bce(fake_attr_logits, labels).item(), rel=1e-5)


@pytest.mark.parametrize("aux_weight", [0.0, 1.0])
def test_the_classifier_learns_only_from_its_loss(aux_weight):
    start = {}

    def keep(gan):
        start["classifier"] = gan.discriminator.classifier.weight.detach().clone()

    gan, _ = conditional_fit(2, "model=acgan", TWO, f"model.aux_weight={aux_weight}", on_start=keep)
    assert torch.equal(gan.discriminator.classifier.weight, start["classifier"]) == (aux_weight == 0)


@pytest.mark.parametrize("overrides", [
    ["model=projection", "model/loss=hinge"],
    ["model=acgan", "model/penalty=r1", "model.penalties.r1.every=1", "model.discriminator.batch_norm=false"],
    ["model=projection", "model.augment=[color,translation,cutout]", "model/penalty=r1", "model.penalties.r1.every=1"],
    ["model=projection", "model/loss=wgan", "model/penalty=gp", "model.n_dis=2"],
    ["model=acgan", "trainer.precision=bf16-mixed"],
], ids=["projection+hinge", "acgan+r1", "projection+diffaugment+r1", "projection+wgan_gp", "acgan+bf16"])
def test_conditional_presets_compose(overrides):
    record = Record()
    gan, trainer = conditional_fit(2, *overrides, TWO, callbacks=[record])
    assert all(torch.isfinite(v).all() for v in trainer.callback_metrics.values())
    assert all(torch.isfinite(p).all() for p in gan.parameters())
    # Every D call of the step, the penalties' included, saw the batch's labels; G was asked for them.
    assert record.d_calls and all(torch.equal(args[1], record.batch_labels) for args, _ in record.d_calls)
    assert torch.equal(record.g_calls[0][1], record.batch_labels)


def test_an_unconditional_preset_ignores_data_attributes(tmp_path, caplog):
    cfg = compose_config([*TINY, TWO], tmp_path / "run")
    assert not conditional_config(cfg.model) and attribute_kwargs(cfg.model, ["Smiling", "Eyeglasses"]) == {}
    assert conditional_config(compose_config([*TINY, "model=acgan"], tmp_path).model)
    with caplog.at_level("INFO", logger="celebgan.train"):
        train(cfg)
    assert "data.attributes=[Smiling,Eyeglasses] is ignored" in caplog.text
    gan, _ = load_gan(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert not gan.conditional and "attr_frequencies" not in gan.state_dict()


# --- a conditional run: resume and the checkpoint readers ------------------------------------------

RUN = [*TINY, "model=projection", TWO]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("conditional") / "straight"
    train(compose_config([*RUN, "trainer.max_epochs=2"], run))
    return run / "checkpoints" / "last.ckpt"


def test_a_resumed_conditional_run_equals_the_straight_one(straight, tmp_path):
    from conftest import assert_same_training_state

    first = tmp_path / "first"
    train(compose_config([*RUN, "trainer.max_epochs=1"], first))
    halfway = first / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match="data.attributes"):
        train(compose_config([*TINY, "model=projection", "data.attributes=[Smiling]", "trainer.max_epochs=2",
                              f"resume={halfway}"], tmp_path / "other"))
    train(compose_config([*RUN, "trainer.max_epochs=2", f"resume={halfway}"], tmp_path / "second"))
    assert_same_training_state(torch.load(straight, weights_only=True), torch.load(halfway, weights_only=True))


def test_the_stored_config_is_the_one_that_ran_and_resumes_from_a_composed_null(tmp_path):
    from celebgan.run.checkpoint import CONFIG_KEY

    one = tmp_path / "one"
    train(compose_config([*TINY, "model=projection", "data.attributes=[Smiling]", "trainer.max_steps=3"], one))
    stored = torch.load(one / "checkpoints" / "last.ckpt", weights_only=True)[CONFIG_KEY]
    assert stored["data"]["attributes"] == ["Smiling"] and stored["trainer"]["max_steps"] == 3  # training steps
    # null takes all the data has, which are not the run's one attribute: found once the data is read
    with pytest.raises(UserError, match=r"data.attributes: \['Smiling'\] -> \['Bald'"):
        train(compose_config([*TINY, "model=projection", "trainer.max_steps=6",
                              f"resume={one / 'checkpoints' / 'last.ckpt'}"], tmp_path / "other"))
    every = tmp_path / "every"
    train(compose_config([*TINY, "model=projection"], every))
    train(compose_config([*TINY, "model=projection", "trainer.max_epochs=2", "resume=auto"], tmp_path / "again"))
    stored = torch.load(every / "checkpoints" / "last.ckpt", weights_only=True)
    assert stored["global_step"] == 16 and stored[CONFIG_KEY]["data"]["attributes"] == ATTR_NAMES


def test_load_gan_and_load_generator_rebuild_a_conditional_model(straight):
    ckpt = torch.load(straight, weights_only=True)
    gan, config = load_gan(straight)
    assert gan.conditional and gan.attr_names == ["Smiling", "Eyeglasses"]
    assert isinstance(gan.generator_ema, ConditionalGenerator)
    assert isinstance(gan.discriminator, ProjectionDiscriminator)
    for key in ("attr_frequencies", "fixed_labels", "generator_ema.embed.weight", "discriminator.embed.weight"):
        assert torch.equal(gan.state_dict()[key], ckpt["state_dict"][key]), key
    _, every = render_faces(64, 16, seed=0, split="train")
    columns = [ATTR_NAMES.index("Smiling"), ATTR_NAMES.index("Eyeglasses")]
    torch.testing.assert_close(gan.attr_frequencies, every[:, columns].float().mean(0))

    G = celebgan.load_generator(straight, device="cpu")
    assert G.attr_names == gan.attr_names
    images = G.sample(4, seed=3)
    # The labels not asked for: training label rows, as often as the data holds them.
    labels = gan.label_table.draw(4, {}, torch.Generator().manual_seed(3))
    expected = (gan.generator_ema.eval()(latents(4, gan.generator.nz, 3), labels) + 1) / 2
    torch.testing.assert_close(images, expected.clamp(0, 1))
    z = latents(2, G.nz, 0)
    assert not torch.equal(G(z, torch.zeros(2, 2)), G(z, torch.ones(2, 2)))


def test_a_conditional_checkpoint_with_malformed_attribute_names_is_refused(straight, tmp_path):
    ckpt = torch.load(straight, weights_only=True)
    ckpt["hyper_parameters"]["attr_names"] = "Smiling"
    path = tmp_path / "bad.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(UserError, match="attr_names"):
        load_gan(path)


def test_a_conditional_preset_without_data_attributes_takes_all_the_data_has(tmp_path, caplog):
    with caplog.at_level("INFO", logger="celebgan.train"):
        train(compose_config([*TINY, "model=acgan"], tmp_path / "run"))
    gan, config = load_gan(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert gan.attr_names == ATTR_NAMES and gan.discriminator.num_attrs == len(ATTR_NAMES)
    assert config["data"]["attributes"] == ATTR_NAMES  # the stored run config holds what ran, not null
    assert f"all {len(ATTR_NAMES)} of the data's attributes" in caplog.text
