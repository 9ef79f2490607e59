"""The README's Python example runs as written (on the data mirror)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.slow


def test_readme_example_runs(tmp_path, monkeypatch, isbi_mirror):
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UNET_KERAS_DATA_URL", isbi_mirror.as_uri() + "/")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "unet.keras").is_file()
    assert (tmp_path / "data" / "isbi2012" / "train" / "label" / "29.png").is_file()
    assert namespace["paper_unet"].output_shape == (None, 388, 388, 2)
    assert namespace["model"].output_shape == (None, None, None, 1)
