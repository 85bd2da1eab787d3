"""search=optuna: an Optuna search over learning rates, betas and the R1 strength, each trial
returning its final FID to the sweeper."""
import re
import subprocess
from pathlib import Path

import hydra
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from conftest import RANDOM_METRICS, cli_cmd, cli_env
from events import hparams, scalars

from celebgan.train import preflight

SEARCHED = ["model.g_optimizer.lr", "model.d_optimizer.lr", "model.g_optimizer.betas.0",
            "model.d_optimizer.betas.0", "model.penalties.r1.gamma"]
COLUMNS = ["g_lr", "d_lr", "g_beta1", "d_beta1", "model.penalties.r1.gamma"]  # their HParams columns


def final_fid(run: Path) -> float:
    return scalars(run, "metrics/fid")[-1].value


@pytest.mark.integration
def test_two_trial_search_minimises_the_final_fid(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = cli_cmd("search=optuna", "hydra.sweeper.n_trials=2",
                  *RANDOM_METRICS,
                  f"hydra.sweep.dir={sweep}")
    cmd.insert(3, "-m")  # python -m celebgan.train -m ...
    result = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "\x1b[" not in out and "A new study created" in out  # Optuna's lines, without colour codes
    assert out.count("Real features: reusing") == 1  # trial 0 computes them, trial 1 reads them once
    trials = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [t.name for t in trials] == ["0", "1"]
    sampled = []
    for trial in trials:
        overrides = yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text())
        values = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in SEARCHED)
        assert sorted(values) == sorted(SEARCHED)
        config = yaml.safe_load((trial / ".hydra" / "config.yaml").read_text())
        assert config["model"]["g_optimizer"]["lr"] == float(values["model.g_optimizer.lr"])
        assert config["model"]["penalties"]["r1"]["gamma"] == float(values["model.penalties.r1.gamma"])
        sampled.append(values)
        # Every searched value is in the trial's HParams row, in the columns TensorBoard shows first.
        infos, row = hparams(trial)
        assert [i.display_name for i in infos if i.differs] == COLUMNS
        assert [row[c] for c in COLUMNS] == pytest.approx([float(values[k]) for k in SEARCHED])
    assert sampled[0] != sampled[1]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    fids = [final_fid(t) for t in trials]
    assert results["best_value"] == min(fids)  # what train returned is what the sweeper minimised
    assert results["best_params"] == {k: float(v) for k, v in sampled[fids.index(min(fids))].items()}


def searched_values(spec: str) -> list[str]:
    """The values a search=recipe parameter's extremes take: each of a choice's options, or an
    interval's two ends (tag(log, ...) or not)."""
    spec = re.sub(r"^tag\(log,\s*(.*)\)$", r"\1", spec.strip())
    if spec.startswith("interval("):
        return [v.strip() for v in spec[len("interval("):-1].split(",")]
    assert spec.startswith("choice("), spec
    return [v.strip() for v in re.findall(r"\[[^\]]*\]|[^,\[\]]+", spec[len("choice("):-1]) if v.strip()]


def test_every_value_the_recipe_search_can_sample_builds_a_model(tmp_path):
    # search=recipe's space: each choice's option and each interval's ends compose with the search's
    # own budget and build the GAN, so no trial fails on a value the sampler drew.
    from celebgan.conf import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        hydra_cfg = compose(config_name="config", overrides=["search=recipe"], return_hydra_config=True)
        params = OmegaConf.to_container(hydra_cfg.hydra.sweeper.params)
        assert set(params) >= {"lr_schedule", "model.ema_half_life", "model.ema_rampup", "model.g_optimizer.betas.0",
                               "model.d_optimizer.lr", "model.penalties.r1.gamma", "model.augment",
                               "data.batch_size", "model.generator.nz", "model.d_loss.real_label",
                               "model.instance_noise"}
        for key, spec in params.items():
            for value in searched_values(spec):
                cfg = compose(config_name="config", overrides=["search=recipe", f"{key}={value}"])
                assert cfg.trainer.max_epochs == 10 and cfg.metrics.every_n_epochs == 10  # FID once, at the end
                preflight(cfg)
                gan = hydra.utils.instantiate(cfg.model)
                assert list(gan.penalties) == ["r1"]  # lazy R1 always on; its gamma is searched
                if key == "lr_schedule":
                    assert (cfg.model.lr_scheduler is None) == (value == "constant")
                elif isinstance(chosen := OmegaConf.select(cfg, key), (int, float)):
                    assert chosen == pytest.approx(float(value)), key
                else:  # a list: model.augment
                    assert str(list(chosen)).replace(" ", "").replace("'", "") == value.replace(" ", ""), key
