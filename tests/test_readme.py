"""The README's Python examples run as written (on the data mirror)."""

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.slow


def readme_example(index=0):
    """The README's `index`-th Python block."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[index]


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="checks TensorFlow's oneDNN switch, and a JAX or PyTorch install may lack TensorFlow",
)
def test_readme_example_imports_unet_keras_before_keras():
    """Keras first would load TensorFlow before `unet_keras` can turn its oneDNN
    kernels on: the example would train 1.4-2.3x slower, under a warning."""
    imports = [ast.unparse(node) for node in ast.parse(readme_example()).body
               if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert len(imports) == 2
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["KERAS_BACKEND"] = "tensorflow"
    code = "\n".join([*imports, "import os", "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"])
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True)
    assert result.stdout.split()[-1] == "1", "the README example imports keras too early"


def test_readme_example_runs(tmp_path, monkeypatch, isbi_mirror):
    code = readme_example()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UNET_KERAS_DATA_URL", isbi_mirror.as_uri() + "/")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "unet.keras").is_file()
    assert (tmp_path / "data" / "isbi2012" / "train" / "label" / "29.png").is_file()
    assert namespace["paper_unet"].output_shape == (None, 388, 388, 2)
    assert namespace["model"].output_shape == (None, None, None, 1)
    assert int(namespace["model"].optimizer.iterations) == len(namespace["tiles"])  # one epoch


def test_readme_own_data_example_runs(tmp_path, monkeypatch, isbi_data):
    """The "Your own data" block, on five ISBI slices written out as PNG folders
    whose masks mark the membrane (the foreground here) 255."""
    from unet_keras.io import read_stack

    images = read_stack(isbi_data / "train" / "image")[:5]
    labels = read_stack(isbi_data / "train" / "label")[:5]
    for name, stack in (("images", images), ("masks", np.where(labels == 0, 255, 0))):
        folder = tmp_path / "my_data" / name
        folder.mkdir(parents=True)
        for i, slice_ in enumerate(stack):
            cv2.imwrite(str(folder / f"{i}.png"), slice_.astype(np.uint8))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(readme_example(1), "README.md", "exec"), namespace)
    assert namespace["images"].shape == (5, 512, 512, 1)
    np.testing.assert_array_equal(namespace["masks"][..., 0], labels == 0)
    assert namespace["probability"].shape == (512, 512, 1)
    assert int(namespace["model"].optimizer.iterations) == len(namespace["train_tiles"])
