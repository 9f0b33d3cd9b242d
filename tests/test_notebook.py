import pytest

from helpers import PROJECT_ROOT

nbclient = pytest.importorskip("nbclient", reason="the notebook tooling comes with the dev extra")
nbformat = pytest.importorskip("nbformat")


@pytest.mark.slow
def test_report_notebook_runs_top_to_bottom_on_a_sweep(small_sweep, monkeypatch):
    monkeypatch.setenv("BRAIN_MRI_SWEEP", str(small_sweep))
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "sweep_report.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, resources={"metadata": {"path": str(PROJECT_ROOT / "notebooks")}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5  # grid, curves, ROC, confusion matrix, test images
    assert any("Best run" in o.get("data", {}).get("text/markdown", "") for o in outputs)
