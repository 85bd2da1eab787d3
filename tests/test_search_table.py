"""benchmarks/search_table.py: the recipe search's table from its study file alone."""
import optuna
from test_atomic import load_script

search_table = load_script("search_table")


def test_the_table_lists_finished_trials_best_first_from_the_study_file(tmp_path):
    path = tmp_path / "study.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=search_table.STUDY_NAME, storage=f"sqlite:///{path}")
    for fid, lr in ((60.0, 1e-3), (45.5, 2e-3), (80.0, 5e-4)):
        trial = study.ask({"model.g_optimizer.lr": optuna.distributions.LogUniformDistribution(1e-4, 1e-2)})
        assert trial.params  # the distribution is drawn from; the value told is what the trial returned
        study.tell(trial, fid)
    running = study.ask()  # a trial a stopped session left running: listed in the count only
    del running
    trials = search_table.finished_trials(path)
    assert [t.value for t in trials] == [45.5, 60.0, 80.0]
    text = search_table.table(trials, 4, 2, path)
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| trial")]
    assert len(rows) == 2 and rows[0].startswith("| 1 | 45.50 |") and rows[1].startswith("| 0 | 60.00 |")
    assert "3 finished trial(s) of 4" in text and text.startswith(search_table.SECTION)
    # The study name the search writes under is the one the table reads.
    assert f"study_name: {search_table.STUDY_NAME}" in (search_table.ROOT / "conf" / "search" / "recipe.yaml").read_text()
