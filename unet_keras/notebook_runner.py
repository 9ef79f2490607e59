"""Runs the tutorial notebooks top to bottom with nbclient, as a person would.

    python -m unet_keras.notebook_runner notebooks notebooks/executed [--fast] [--only 03]
        [-p NAME VALUE ...]

Every notebook `NN_name.ipynb` of the source folder is executed in order, with
the notebook's own folder as the working directory (so its relative paths,
`../data/isbi2012` and `../runs/`, mean what they mean in Jupyter), and the
executed copy, outputs included, is written to the output folder, also when
a cell fails. The exit status is 1 if any notebook failed.

The kernel is the `python3` kernel of the interpreter running this module
(jupyter_client starts the kernel spec's `python` as `sys.executable`), and it
imports this checkout of `unet_keras`: the package's parent folder is put in
front of the kernel's PYTHONPATH.

Options set environment variables that the notebooks' parameters cells read:
`--fast` sets `UNET_KERAS_FAST=1` (tiny networks, a few steps: a smoke test),
`--data-dir` sets `UNET_KERAS_DATA_DIR` and `--runs-dir` `UNET_KERAS_RUNS_DIR`.
The data mirror is the downloader's own variable, `UNET_KERAS_DATA_URL`.

`-p NAME VALUE` sets one of the values that a notebook's cell tagged
`parameters` assigns, as papermill's `-p` does (papermill is not a dependency):
a cell tagged `injected-parameters` that assigns it is put after that cell.
VALUE is read as a Python literal (`5`, `0.5`, `True`, `None`, `"(25, 26)"`),
else kept as a string. A notebook whose parameters cell does not assign NAME
runs without it.
"""

import argparse
import ast
import os
import sys
import time
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
FAST_ENV = "UNET_KERAS_FAST"
DATA_DIR_ENV = "UNET_KERAS_DATA_DIR"
RUNS_DIR_ENV = "UNET_KERAS_RUNS_DIR"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"  # papermill's tag for the cell it adds


class NotebookError(RuntimeError):
    """A cell of a notebook failed; the message names the notebook and the cell."""


def find_notebooks(folder, only=()):
    """The notebooks `NN_*.ipynb` of `folder` in order.

    Args:
        folder: The folder holding the notebooks (not searched recursively).
        only: Names to keep: a notebook is kept if its file name or stem starts
            with one of them (`"03"`, `"03_train"`, `"03_train.ipynb"`).

    Raises:
        FileNotFoundError: If the folder holds no notebook, or none matches.
    """
    folder = Path(folder)
    notebooks = sorted(
        p for p in folder.glob("*.ipynb") if p.name[:2].isdigit() and not p.name.startswith(".")
    )
    if not notebooks:
        raise FileNotFoundError(f"No notebooks NN_name.ipynb in {folder}.")
    if only:
        keep = [p for p in notebooks if any(p.name.startswith(str(o)) for o in only)]
        if not keep:
            names = ", ".join(p.name for p in notebooks)
            raise FileNotFoundError(f"No notebook matches {list(only)}; there are: {names}.")
        notebooks = keep
    return notebooks


def parse_value(text):
    """A `-p` value: the Python literal it spells, else the text itself
    (`"5"` gives 5, `"(25, 26)"` a tuple, `"notebook2"` the string)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parameter_names(nb):
    """The names that the cell tagged `parameters` of `nb` assigns at its top
    level, in order; empty where no cell is tagged so."""
    for cell in nb.cells:
        if cell.cell_type == "code" and PARAMETERS_TAG in cell.metadata.get("tags", []):
            names = []
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign):
                    targets = node.targets
                elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                    targets = [node.target]
                else:  # `import os` and the like: not parameters
                    continue
                for target in targets:  # `W0, SIGMA = 10.0, 5.0` assigns both
                    elements = target.elts if isinstance(target, ast.Tuple) else [target]
                    names += [t.id for t in elements if isinstance(t, ast.Name)]
            return list(dict.fromkeys(names))
    return []


def inject_parameters(nb, parameters):
    """Puts a cell that assigns `parameters` after the parameters cell of `nb`.

    Like papermill, it leaves the parameters cell as it is, so that the
    executed copy shows both the defaults and what overrode them; values that
    the parameters cell derives from an overridden one (`... if FAST else
    ...`) keep their defaults.

    Args:
        nb: A notebook (`nbformat.NotebookNode`), changed in place.
        parameters: `{name: value}`; each value is written as its `repr`.

    Returns:
        The names of `parameters` that the parameters cell does not assign:
        they are not injected.
    """
    import nbformat  # a dev dependency, as in execute_notebook

    known = parameter_names(nb)
    used = {name: value for name, value in parameters.items() if name in known}
    if used:
        index = next(i for i, cell in enumerate(nb.cells)
                     if PARAMETERS_TAG in cell.metadata.get("tags", []))
        lines = ["# Parameters set by python -m unet_keras.notebook_runner -p"]
        lines += [f"{name} = {value!r}" for name, value in used.items()]
        cell = nbformat.v4.new_code_cell("\n".join(lines))
        cell.metadata["tags"] = [INJECTED_TAG]
        nb.cells.insert(index + 1, cell)
    return [name for name in parameters if name not in known]


def kernel_env(fast=False, data_dir=None, runs_dir=None, env=None):
    """The environment of the kernel: `env` (default: this process's) plus
    the notebooks' variables and this checkout on the PYTHONPATH."""
    env = dict(os.environ if env is None else env)
    if fast:
        env[FAST_ENV] = "1"
    if data_dir is not None:
        env[DATA_DIR_ENV] = str(Path(data_dir).resolve())
    if runs_dir is not None:
        env[RUNS_DIR_ENV] = str(Path(runs_dir).resolve())
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    path = [str(PACKAGE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    return env


def _failed_cell(nb):
    """Index and first line of the first cell with an error output."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                return index, first, f"{output.get('ename')}: {output.get('evalue')}"
    return None


def execute_notebook(
    path, output=None, *, fast=False, data_dir=None, runs_dir=None, env=None,
    timeout=None, kernel_name="python3", parameters=None,
):
    """Executes one notebook top to bottom and writes the executed copy.

    Args:
        path: The notebook.
        output: Where to write the executed notebook; None writes nothing.
        fast: Set `UNET_KERAS_FAST=1` for the kernel.
        data_dir, runs_dir: Set `UNET_KERAS_DATA_DIR` / `UNET_KERAS_RUNS_DIR`.
        env: The base environment of the kernel (default: this process's).
        timeout: Seconds one cell may run; None for no limit.
        kernel_name: The Jupyter kernel to run.
        parameters: `{name: value}` to set after the parameters cell
            (`inject_parameters`); names it does not assign are left out.

    Returns:
        The seconds the notebook took.

    Raises:
        NotebookError: If a cell failed or timed out (the executed copy, with
            the error, is still written).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if parameters:
        inject_parameters(nb, parameters)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=kernel_name,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    start = time.perf_counter()
    error = None
    try:
        client.execute(env=kernel_env(fast, data_dir, runs_dir, env))
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as caught:
        error = caught
    seconds = time.perf_counter() - start
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, output)
    if error is not None:
        where = _failed_cell(nb)
        # Without an error output (a dead kernel, a timeout), the exception's
        # last line says what happened; the lines above are its traceback.
        last_line = (str(error).strip().splitlines() or [""])[-1]
        detail = (
            f"cell {where[0]} ({where[1]!r}): {where[2]}" if where
            else f"{type(error).__name__}: {last_line}"
        )
        saved = f" The executed copy is {output}." if output is not None else ""
        message = f"{path.name} failed after {seconds:.0f} s at {detail}.{saved}"
        raise NotebookError(message) from error
    return seconds


def make_parser():
    parser = argparse.ArgumentParser(
        prog="python -m unet_keras.notebook_runner",
        description="Execute the tutorial notebooks in order into an output folder.",
    )
    parser.add_argument("source", nargs="?", default="notebooks", help="folder of the notebooks")
    parser.add_argument("output", nargs="?", default="notebooks/executed",
                        help="folder for the executed notebooks")
    parser.add_argument("--fast", action="store_true",
                        help=f"set {FAST_ENV}=1: tiny settings, a smoke test (results meaningless)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only notebooks whose name starts with NAME (repeatable)")
    parser.add_argument("--data-dir", help=f"set {DATA_DIR_ENV} (default: ../data/isbi2012)")
    parser.add_argument("--runs-dir", help=f"set {RUNS_DIR_ENV} (default: ../runs)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds one cell may run (default: no limit)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    parser.add_argument("--stop-on-error", action="store_true",
                        help="stop at the first notebook that fails")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"),
                        help="set a value of the notebooks' parameters cell, as papermill's -p "
                             "does; VALUE is read as a Python literal, else as a string "
                             "(repeatable)")
    return parser


def _unknown_parameters(notebooks, parameters):
    """`{notebook: [names its parameters cell does not assign]}`; empty
    without parameters (the notebooks are then not read here)."""
    if not parameters:
        return {}
    import nbformat

    unknown = {}
    for path in notebooks:
        known = parameter_names(nbformat.read(path, as_version=4))
        unknown[path] = [name for name in parameters if name not in known]
    return unknown


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        notebooks = find_notebooks(args.source, args.only)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parameters = {name: parse_value(value) for name, value in args.parameter}
    # Checked before anything runs: a misspelt NAME would otherwise be ignored by every
    # notebook and show only as defaults in the results.
    unknown = _unknown_parameters(notebooks, parameters)
    everywhere = [name for name in parameters if all(name in u for u in unknown.values())]
    if everywhere:
        print(f"error: no parameters cell of {', '.join(p.name for p in notebooks)} assigns "
              f"{', '.join(everywhere)}.", file=sys.stderr)
        return 2
    output = Path(args.output)
    mode = " in fast mode" if args.fast else ""
    print(f"Executing {len(notebooks)} notebook(s){mode} into {output}/", flush=True)
    failures, total = [], 0.0
    for path in notebooks:
        if unknown.get(path):
            print(f"  ({path.name} has no parameter {', '.join(unknown[path])}: "
                  "it runs without)", flush=True)
        print(f"  {path.name} ...", end=" ", flush=True)
        try:
            seconds = execute_notebook(
                path, output / path.name, fast=args.fast, data_dir=args.data_dir,
                runs_dir=args.runs_dir, timeout=args.timeout, kernel_name=args.kernel,
                parameters=parameters,
            )
        except NotebookError as error:
            print("FAILED", flush=True)
            print(f"    {error}", file=sys.stderr, flush=True)
            failures.append(path.name)
            if args.stop_on_error:
                break
            continue
        total += seconds
        print(f"ok ({seconds:.0f} s)", flush=True)
    if failures:
        print(f"{len(failures)} notebook(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    print(f"All {len(notebooks)} notebook(s) ran ({total:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
