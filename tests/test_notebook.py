"""notebooks/explore.ipynb executes top to bottom on a CPU, training its own tiny model."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"


@pytest.mark.integration
@pytest.mark.slow  # a kernel that trains its own model and an attribute classifier: 10-60 s on 2 cores
def test_explore_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    src = str(Path(__file__).resolve().parents[1] / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CELEBGAN_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.delenv("CELEBGAN_CKPT", raising=False)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {}) or "image/gif" in o.get("data", {})]
    # load_generator's samples, grid, compare, interpolation, attributes, progress GIF, curves
    assert len(images) == 7
    for name in ["grid.png", "compare.png", "interpolate.png", "attributes.png", "progress.gif",
                 "training_curves.png", "run/checkpoints/last.ckpt"]:
        assert (tmp_path / name).is_file(), name
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "held-out accuracy on Smiling" in text
    assert "(16, 3, 16, 16) in [0." in text  # G.sample(16, seed=0): a tensor in [0, 1]
