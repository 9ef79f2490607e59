"""The package as `pip install` builds it: a wheel with every module, the
dataset checksums and the console script, importable without the source tree.

`make` installs the package in editable mode, which reads the source folder
directly, so a module or data file missing from the wheel would pass every
other test and break only for users who `pip install` it.
"""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from unet_keras.datasets import isbi2012

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--wheel-dir", str(out),
         "--disable-pip-version-check"],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    # Setuptools warns months before it stops building a configuration (the old
    # `license` table, packages found only by accident): fix it then.
    warnings = re.findall(r"\w*Warning: .*", build.stdout + build.stderr)
    assert not warnings, "\n".join(warnings)
    (path,) = out.glob("unet_keras-*.whl")
    return path


def test_wheel_holds_every_module_and_the_checksums(wheel):
    source = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "unet_keras").rglob("*")
        if path.suffix in (".py", ".txt") and "__pycache__" not in path.parts
    }
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name for name in archive.namelist() if name.startswith("unet_keras/")}
    assert "unet_keras/datasets/isbi2012_sha256.txt" in source
    assert packaged == source


def test_wheel_metadata_matches_requirements_and_cli(wheel):
    with zipfile.ZipFile(wheel) as archive:
        info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(info).decode().splitlines()
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "unet-keras = unet_keras.cli:main" in entry_points
    assert "License-Expression: MIT" in metadata
    required = [
        Requirement(line.removeprefix("Requires-Dist: "))
        for line in metadata
        if line.startswith("Requires-Dist: ")
    ]
    base = {r.name.lower() for r in required if r.marker is None}

    def extra(name):
        return {
            r.name.lower()
            for r in required
            if r.marker is not None and r.marker.evaluate({"extra": name})
        }

    # requirements.txt is what `make` installs: the wheel's own dependencies plus
    # TensorFlow, the default backend, which the wheel leaves to an extra.
    assert extra("tensorflow") == {"tensorflow"}
    # The other backends, named in the error of an install without any.
    assert extra("torch") == {"torch"} and extra("jax") == {"jax"}
    assert base | extra("tensorflow") == _listed("requirements.txt")
    # The `dev` extra (what `make test-jax` installs) is requirements-dev.txt
    # without PyTorch, the second backend of `make test`.
    assert extra("dev") == _listed("requirements-dev.txt") - {"torch"}


def _requirements(requirements_file):
    lines = (REPO / requirements_file).read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip()[:1] not in ("", "#")]


def _listed(requirements_file):
    return {r.name.lower() for r in _requirements(requirements_file)}


def test_the_oldest_pins_are_the_floors_of_every_requirement():
    """`make test-oldest` checks the floors of requirements.txt and pyproject.toml
    only if requirements-oldest.txt pins each package at exactly its floor."""
    floors = {r.name.lower(): r for r in _requirements("requirements.txt")}
    pins = {r.name.lower(): r for r in _requirements("requirements-oldest.txt")}
    assert pins.keys() == floors.keys()
    pyproject = (REPO / "pyproject.toml").read_text()
    for name, requirement in floors.items():
        (floor,) = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        (pin,) = pins[name].specifier
        assert pin.operator == "==", pins[name]
        # The first release of the floor: "3.6" is pinned as 3.6.0, opencv's "4.9" as 4.9.0.80.
        assert Version(pin.version).release[: len(floor.release)] == floor.release, name
        assert requirement.specifier.contains(pin.version), name
        # pyproject.toml states the same floor as requirements.txt.
        assert f'"{requirement}"' in pyproject, name


def test_wheel_imports_without_the_source_tree(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    script = (
        "import unet_keras, unet_keras.datasets.isbi2012 as data; "
        "print(unet_keras.__file__); print(len(data.manifest()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"),
             # The backend of this pass: a JAX or PyTorch install may lack TensorFlow.
             "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"),
             "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    module_file, count = result.stdout.split()[-2:]
    assert Path(module_file).is_relative_to(tmp_path / "site")
    assert int(count) == len(isbi2012.manifest()) == 90


@pytest.mark.parametrize(
    "module, setting, said",
    [
        ("tensorflow", {}, "tensorflow (Keras's default backend)"),
        ("torch", {"KERAS_BACKEND": "torch"}, "torch (KERAS_BACKEND=torch)"),
        ("jax", {"keras.json": '{"backend": "jax"}'}, "jax (the backend of "),
    ],
)
def test_a_missing_backend_says_how_to_install_it(tmp_path, module, setting, said):
    """`pip install unet-keras` without an extra failed deep inside Keras with
    `No module named 'tensorflow'`. The module is made unimportable here,
    nothing is uninstalled."""
    keras_home = tmp_path / "keras_home"  # no ~/.keras/keras.json of this machine
    keras_home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(keras_home)
    env["PYTHONPATH"] = str(REPO)  # this checkout, whatever is installed
    if "keras.json" in setting:
        (keras_home / "keras.json").write_text(setting["keras.json"])
    else:
        env.update(setting)
    script = f"import sys; sys.modules[{module!r}] = None; import unet_keras"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: unet-keras needs Keras's backend installed"), last
    assert f"Keras is set to use {said}" in last
    assert f"the module `{module}` is not installed" in last
    assert 'pip install "unet-keras[tensorflow]"' in last
    assert "KERAS_BACKEND=torch or KERAS_BACKEND=jax" in last


@pytest.mark.parametrize("gpu, cuda", [("1", True), ("0", False)])
def test_make_install_adds_tensorflows_cuda_libraries_for_a_gpu(gpu, cuda):
    # TensorFlow's wheel trains on the CPU beside a GPU unless NVIDIA's libraries
    # come with it; `make -n` prints the install's commands without running them.
    commands = subprocess.run(
        ["make", "-n", "-B", "install", f"GPU={gpu}"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    assert "pip install -r requirements.txt" in commands
    assert ('"tensorflow[and-cuda]==' in commands) == cuda
    # A stamp of its own, so that GPU=1 after an install without the libraries adds them.
    assert (".venv/.runtime-installed-cuda" in commands) == cuda
