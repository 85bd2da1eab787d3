"""The fast training step changes speed, not results: bf16 vs fp32, compiled vs eager, channels_last."""
import hydra
import lightning as L
import pytest
import torch
from conftest import fit_steps

from celebgan.conf import resolvers


def one_step(cfg):
    """(model, logged metrics) after one training step (two optimizer steps) from seed 0."""
    model, trainer = fit_steps(cfg, 1)
    return model, {k: float(v) for k, v in trainer.callback_metrics.items()}


def update_cosine(before, after_a, after_b) -> float:
    """Cosine similarity of two runs' parameter updates from the same start."""
    da = torch.cat([(after_a[k] - before[k]).flatten() for k in before])
    db = torch.cat([(after_b[k] - before[k]).flatten() for k in before])
    return float(torch.nn.functional.cosine_similarity(da, db, dim=0))


def trained_params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in model.named_parameters()}


def test_networks_are_channels_last(make_cfg):
    model = hydra.utils.instantiate(make_cfg().model)
    conv = model.discriminator.main[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_bf16_and_fp32_steps_agree(make_cfg):
    cfg = make_cfg("data.num_images=16")
    L.seed_everything(0)
    before = trained_params(hydra.utils.instantiate(cfg.model))
    fp32, m32 = one_step(make_cfg("data.num_images=16", "trainer.precision=32-true"))
    bf16, m16 = one_step(make_cfg("data.num_images=16", "trainer.precision=bf16-mixed"))
    for key in ["train/d_loss", "train/g_loss", "train/D_x"]:
        assert m16[key] == pytest.approx(m32[key], rel=0.03), key
    # Adam's first step moves each weight by about lr * sign(grad): agreement is in direction.
    assert update_cosine(before, trained_params(fp32), trained_params(bf16)) > 0.9


@pytest.mark.slow  # compiles G and D with inductor: about a minute on 2 CPU cores
@pytest.mark.integration  # inductor starts the C++ compiler
def test_compiled_and_eager_steps_agree(make_cfg):
    cfg = make_cfg("data.num_images=16")
    L.seed_everything(0)
    before = trained_params(hydra.utils.instantiate(cfg.model))
    eager, m_eager = one_step(cfg)
    compiled, m_compiled = one_step(make_cfg("data.num_images=16", "model.compile=true"))
    for key in ["train/d_loss", "train/g_loss", "train/D_x"]:
        assert m_compiled[key] == pytest.approx(m_eager[key], rel=1e-3, abs=1e-5), key
    assert update_cosine(before, trained_params(eager), trained_params(compiled)) > 0.999
    assert set(compiled.state_dict()) == set(eager.state_dict())  # checkpoints keep plain names


def test_precision_auto(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolvers.default_precision("auto") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolvers.default_precision("auto") == "bf16-mixed"
    assert resolvers.default_precision("cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolvers.default_precision("gpu") == "32-true"
