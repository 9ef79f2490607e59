"""The notebook runner: which notebooks it runs, the kernel's environment, its
command line, and one tiny notebook executed in a real kernel (slow)."""

import os
import sys
from pathlib import Path

import nbformat
import pytest

from unet_keras import notebook_runner
from unet_keras.notebook_runner import (
    NotebookError,
    execute_notebook,
    find_notebooks,
    inject_parameters,
    kernel_env,
    main,
    parameter_names,
    parse_value,
)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO / "notebooks"


def _read(path):
    return nbformat.read(path, as_version=4)


def test_find_notebooks_filters_by_name(tmp_path):
    assert [p.stem for p in find_notebooks(NOTEBOOKS_DIR, ["03"])] == ["03_train"]
    assert [p.stem for p in find_notebooks(NOTEBOOKS_DIR, ["01_data.ipynb", "05"])] == [
        "01_data", "05_unet_family",
    ]
    with pytest.raises(FileNotFoundError, match="No notebook matches"):
        find_notebooks(NOTEBOOKS_DIR, ["99"])
    with pytest.raises(FileNotFoundError, match="No notebooks"):
        find_notebooks(tmp_path)


def test_kernel_env_sets_the_notebook_variables(tmp_path):
    env = kernel_env(fast=True, data_dir=tmp_path / "d", runs_dir=tmp_path / "r",
                     env={"PYTHONPATH": "/elsewhere"})
    assert env["UNET_KERAS_FAST"] == "1"
    assert env["UNET_KERAS_DATA_DIR"] == str((tmp_path / "d").resolve())
    assert env["UNET_KERAS_RUNS_DIR"] == str((tmp_path / "r").resolve())
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/elsewhere"]
    assert "UNET_KERAS_FAST" not in kernel_env(env={})


def _tiny_notebook(path, source, *more):
    """A notebook of code cells; a source given as `("parameters", source)`
    makes a cell tagged `parameters`."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = []
    for cell_source in (source, *more):
        tags = []
        if isinstance(cell_source, tuple):
            tags, cell_source = [cell_source[0]], cell_source[1]
        cell = nbformat.v4.new_code_cell(cell_source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.write(nb, path)
    return path


PARAMETERS = (
    "import os\n\n"
    "FAST = os.environ.get('UNET_KERAS_FAST', '0') == '1'\n"
    "EPOCHS = 2 if FAST else None\n"
    "W0, SIGMA = 10.0, 5.0\n"
    "RUN_NAME: str = 'notebook'\n"
)


def test_parse_value_reads_python_literals_else_keeps_the_text():
    assert parse_value("5") == 5 and parse_value("0.5") == 0.5
    assert parse_value("True") is True and parse_value("None") is None
    assert parse_value("(25, 26)") == (25, 26)
    assert parse_value("notebook2") == "notebook2"  # a bare word is a string, as in papermill
    assert parse_value("'quoted'") == "quoted"


def test_inject_parameters_adds_a_cell_after_the_parameters_cell(tmp_path):
    path = _tiny_notebook(tmp_path / "01_p.ipynb", "import sys", ("parameters", PARAMETERS),
                          "print(EPOCHS)")
    nb = _read(path)
    assert parameter_names(nb) == ["FAST", "EPOCHS", "W0", "SIGMA", "RUN_NAME"]
    ignored = inject_parameters(nb, {"EPOCHS": 5, "SIGMA": 2.5, "RUN_NAME": "b", "NOPE": 1})
    assert ignored == ["NOPE"]
    assert [c.metadata.get("tags", []) for c in nb.cells] == [
        [], ["parameters"], ["injected-parameters"], []
    ]
    assert nb.cells[1].source == PARAMETERS  # the defaults stay visible, as with papermill
    namespace = {}
    for cell in nb.cells[1:3]:
        exec(cell.source, namespace)
    assert (namespace["EPOCHS"], namespace["SIGMA"], namespace["W0"]) == (5, 2.5, 10.0)
    assert namespace["RUN_NAME"] == "b" and "NOPE" not in namespace
    nbformat.validate(nb)

    untouched = _read(path)
    assert inject_parameters(untouched, {"NOPE": 1}) == ["NOPE"]
    assert len(untouched.cells) == 3  # nothing to set: no cell added
    assert parameter_names(_read(_tiny_notebook(tmp_path / "02_q.ipynb", "X = 1"))) == []


def test_main_sets_parameters_where_a_notebook_has_them(tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    src.mkdir()
    _tiny_notebook(src / "01_a.ipynb", "pass", ("parameters", "SEED = 0"))
    _tiny_notebook(src / "02_b.ipynb", "pass", ("parameters", PARAMETERS))
    calls = []

    def fake(path, output=None, **options):
        calls.append((path.name, options["parameters"]))
        return 1.0

    monkeypatch.setattr(notebook_runner, "execute_notebook", fake)
    out = str(tmp_path / "out")
    assert main([str(src), out, "-p", "EPOCHS", "5", "--parameter", "VAL", "(1, 2)"]) == 2
    assert calls == [] and "assigns VAL" in capsys.readouterr().err  # a typo runs nothing
    assert main([str(src), out, "-p", "EPOCHS", "5", "-p", "RUN_NAME", "other"]) == 0
    parameters = {"EPOCHS": 5, "RUN_NAME": "other"}
    assert calls == [("01_a.ipynb", parameters), ("02_b.ipynb", parameters)]
    assert "01_a.ipynb has no parameter EPOCHS, RUN_NAME: it runs without" in (
        capsys.readouterr().out
    )


@pytest.mark.slow
def test_runner_uses_this_interpreter_and_reports_failures(tmp_path):
    good = _tiny_notebook(
        tmp_path / "01_good.ipynb",
        "import os, sys\nimport unet_keras\n"
        "print(sys.executable, os.getcwd(), os.environ['UNET_KERAS_FAST'], unet_keras.__file__)",
    )
    execute_notebook(good, tmp_path / "out" / good.name, fast=True, timeout=120)
    printed = _read(tmp_path / "out" / good.name).cells[0].outputs[0]["text"].split()
    assert printed[:3] == [sys.executable, str(tmp_path), "1"]
    assert printed[3].startswith(str(REPO / "unet_keras"))

    bad = _tiny_notebook(tmp_path / "02_bad.ipynb", "raise RuntimeError('broken on purpose')")
    with pytest.raises(NotebookError, match="02_bad.ipynb failed .* broken on purpose"):
        execute_notebook(bad, tmp_path / "out" / bad.name, timeout=120)
    saved = _read(tmp_path / "out" / bad.name)
    assert saved.cells[0].outputs[0]["output_type"] == "error"  # written despite the error
    assert main([str(tmp_path), str(tmp_path / "out2"), "--fast", "--only", "02"]) == 1
    assert main([str(tmp_path), str(tmp_path / "out3"), "--fast", "--only", "01"]) == 0


@pytest.mark.slow
def test_parameters_reach_the_kernel(tmp_path):
    path = _tiny_notebook(tmp_path / "01_p.ipynb", ("parameters", PARAMETERS),
                          "print(EPOCHS, RUN_NAME)")
    execute_notebook(path, tmp_path / "out.ipynb", parameters={"EPOCHS": 7}, timeout=120)
    executed = _read(tmp_path / "out.ipynb")
    assert executed.cells[1].metadata["tags"] == ["injected-parameters"]
    assert executed.cells[2].outputs[0]["text"] == "7 notebook\n"
    assert len(_read(path).cells) == 2  # the source notebook is left as it was


def test_an_error_without_a_failed_cell_is_named_by_its_last_line(tmp_path, monkeypatch):
    """A dead kernel leaves no error output in any cell: the message is the
    exception's last line, as text (it was a list: "['Kernel died ...']")."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    def die(self, **kwargs):
        raise DeadKernelError("Traceback (most recent call last):\n  ...\nKernel died")

    monkeypatch.setattr(NotebookClient, "execute", die)
    path = _tiny_notebook(tmp_path / "01_dies.ipynb", "print('never runs')")
    with pytest.raises(NotebookError) as caught:
        execute_notebook(path, tmp_path / "out" / path.name)
    assert str(caught.value).startswith("01_dies.ipynb failed after 0 s at DeadKernelError: "
                                        "Kernel died. The executed copy is ")
    assert (tmp_path / "out" / path.name).is_file()


def test_kernel_env_keeps_the_base_env_and_one_copy_of_this_checkout(monkeypatch):
    base = {"PYTHONPATH": os.pathsep.join([str(REPO), "/elsewhere", ""]),
            "TF_CPP_MIN_LOG_LEVEL": "0", "OTHER": "kept"}
    env = kernel_env(env=dict(base))
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/elsewhere"]
    assert (env["TF_CPP_MIN_LOG_LEVEL"], env["OTHER"]) == ("0", "kept")  # not overridden
    given = dict(base)
    kernel_env(fast=True, env=given)
    assert given == base  # the caller's dict is left alone
    monkeypatch.setenv("UNET_KERAS_TEST_VARIABLE", "from this process")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    env = kernel_env()
    assert env["UNET_KERAS_TEST_VARIABLE"] == "from this process"
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"


@pytest.fixture
def executed(monkeypatch, tmp_path):
    """Notebooks 01-03 (empty files) in tmp_path/src, and the calls that `main`
    makes of `execute_notebook`, faked: no kernel starts; `fail` names the
    notebooks whose cells fail."""
    (tmp_path / "src").mkdir()
    for name in ("01_a", "02_b", "03_c", "draft"):
        (tmp_path / "src" / f"{name}.ipynb").write_text("{}")
    calls, fail = [], set()

    def fake(path, output=None, **options):
        calls.append((path.name, output, options))
        if path.stem in fail:
            raise NotebookError(f"{path.name} failed on purpose")
        return 1.0

    monkeypatch.setattr(notebook_runner, "execute_notebook", fake)
    return calls, fail


def test_main_passes_the_options_to_each_notebook(tmp_path, executed):
    calls, _ = executed
    out = tmp_path / "out"
    assert main([str(tmp_path / "src"), str(out), "--fast", "--only", "01", "--only", "03_c",
                 "--data-dir", "d", "--runs-dir", "r", "--timeout", "30",
                 "--kernel", "other"]) == 0
    options = dict(fast=True, data_dir="d", runs_dir="r", timeout=30.0, kernel_name="other",
                   parameters={})
    assert calls == [("01_a.ipynb", out / "01_a.ipynb", options),
                     ("03_c.ipynb", out / "03_c.ipynb", options)]
    calls.clear()
    assert main([str(tmp_path / "src"), str(out)]) == 0
    assert [name for name, _, _ in calls] == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]
    assert calls[0][2] == dict(fast=False, data_dir=None, runs_dir=None, timeout=None,
                               kernel_name="python3", parameters={})


def test_main_reports_failures_and_stops_only_when_asked(tmp_path, executed, capsys):
    calls, fail = executed
    fail.add("02_b")
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    assert main([src, out]) == 1
    assert [name for name, _, _ in calls] == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]
    err = capsys.readouterr().err
    assert "02_b.ipynb failed on purpose" in err and "1 notebook(s) failed: 02_b.ipynb" in err
    calls.clear()
    assert main([src, out, "--stop-on-error"]) == 1
    assert [name for name, _, _ in calls] == ["01_a.ipynb", "02_b.ipynb"]
    calls.clear()
    assert main([str(tmp_path), out]) == 2  # no notebook there: nothing runs
    assert main([src, out, "--only", "99"]) == 2
    assert calls == [] and "error: No notebook matches ['99']" in capsys.readouterr().err
