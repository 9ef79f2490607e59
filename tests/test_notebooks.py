"""The tutorial notebooks: their structure (cheap), and each one executed top to
bottom in fast mode with the real package and the ISBI 2012 mirror (slow)."""

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

from unet_keras.notebook_runner import execute_notebook, find_notebooks

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO / "notebooks"
EXPECTED = [
    "01_data",
    "02_model",
    "03_train",
    "04_predict_and_evaluate",
    "05_unet_family",
]
NOTEBOOKS = [NOTEBOOKS_DIR / f"{name}.ipynb" for name in EXPECTED]
COLAB = "https://colab.research.google.com/github/unet-keras/unet-keras/blob/main/notebooks/"
INSTALL_SPEC = '"unet-keras @ git+https://github.com/unet-keras/unet-keras"'


def _read(path):
    return nbformat.read(path, as_version=4)


def _code(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


# ---------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------
def test_the_five_notebooks_are_there_in_order():
    assert [p.stem for p in find_notebooks(NOTEBOOKS_DIR)] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=EXPECTED)
def test_notebook_structure(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"

    # A title, what you will learn, the run times, the Colab badge.
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "what you will learn" in first.source.lower()
    runtime = re.search(r"run time:?\**:?(.*)", first.source, re.IGNORECASE | re.DOTALL)
    assert runtime, "the first cell states the expected run time"
    assert "GPU" in runtime.group(1) and "CPU" in runtime.group(1)
    assert f"({COLAB}{path.name})" in first.source
    assert "colab-badge.svg" in first.source

    # The first code cell installs the package where it is missing, as valid Python.
    code = _code(nb)
    install = code[0].source
    assert "import unet_keras" in install and "except ImportError" in install
    assert "get_ipython().run_line_magic(" in install and '"pip"' in install
    assert INSTALL_SPEC in install

    # One parameters cell, papermill-style, that reads the fast-mode switch.
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    params = tagged[0].source
    assert 'FAST = os.environ.get("UNET_KERAS_FAST", "0") == "1"' in params
    assert code.index(tagged[0]) == 1, "the parameters come right after the install cell"
    if "DATA_DIR" in params:
        assert '"../data/isbi2012"' in params and "UNET_KERAS_DATA_DIR" in params
    if "RUNS_DIR" in params:
        assert '"../runs"' in params and "UNET_KERAS_RUNS_DIR" in params

    # Every code cell is plain Python (no bare magics), the package is imported rather
    # than copied, and nothing executed is stored.
    for cell in code:
        ast.parse(cell.source)
        assert cell.outputs == [], f"stored outputs in cell {cell.get('id')}"
        assert cell.execution_count is None
    assert any(re.search(r"^from unet_keras[.\w]* import", c.source, re.M) for c in code)
    # Prose between the steps: sections with headings, more than one code cell in three
    # preceded by markdown.
    headings = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
    assert len(headings) >= 4
    cells = nb.cells
    explained = sum(cells[i - 1].cell_type == "markdown" for i in range(1, len(cells))
                    if cells[i].cell_type == "code")
    assert explained >= len(code) / 3


def test_committed_notebooks_are_clean_json():
    for path in NOTEBOOKS:
        raw = json.loads(path.read_text())
        for cell in raw["cells"]:
            assert "outputs" not in cell or cell["outputs"] == []
            assert cell.get("execution_count") is None


# ---------------------------------------------------------------------------
# Each notebook, top to bottom, in fast mode
# ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def notebook_dirs(isbi_mirror, tmp_path_factory):
    """A data folder and a runs folder shared by the notebooks, outside the repo."""
    return tmp_path_factory.mktemp("nb_data"), tmp_path_factory.mktemp("nb_runs")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=EXPECTED)
def test_notebook_runs_in_fast_mode(path, notebook_dirs, isbi_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("UNET_KERAS_DATA_URL", isbi_mirror.as_uri() + "/")
    data_dir, runs_dir = notebook_dirs
    output = tmp_path / path.name
    execute_notebook(path, output, fast=True, data_dir=data_dir, runs_dir=runs_dir, timeout=600)
    nb = _read(output)
    errors = [o for c in _code(nb) for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert all(c.execution_count for c in _code(nb))
