"""benchmarks/recipe_cost.py: each arm is the demo's config plus its overrides, trained for the steps
it times and nothing else (no logger, checkpoints or grids)."""
from test_atomic import load_script

cost = load_script("recipe_cost")


def test_an_arm_is_a_name_and_its_overrides():
    assert cost.parse_arm("wide G and D:model.discriminator.ndf=64,model.generator.ngf=64") == (
        "wide G and D", ["model.discriminator.ndf=64", "model.generator.ngf=64"])
    assert cost.parse_arm("demo:") == ("demo", [])


def test_an_arm_trains_the_demo_with_its_overrides_for_the_timed_steps_only(tmp_path):
    demo = cost.arm_config([], 12, tmp_path / "cache", tmp_path)
    wide = cost.arm_config(["model.discriminator.ndf=64"], 12, tmp_path / "cache", tmp_path)
    assert demo.model.discriminator.ndf == 32 and wide.model.discriminator.ndf == 64
    assert wide.model.generator.ngf == demo.model.generator.ngf == 32
    assert (demo.data.batch_size, demo.data.img_size, demo.model.g_optimizer.lr) == (32, 32, 1e-3)  # the demo's
    assert demo.trainer.max_steps == 12 and demo.trainer.max_epochs == -1
    assert demo.callbacks == {} and demo.logger is None and not demo.trainer.enable_checkpointing
    assert demo.paths.output_dir == str(tmp_path) and demo.data.cache_dir == str(tmp_path / "cache")
