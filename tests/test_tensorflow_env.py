import importlib.util
import os
import platform
import subprocess
import sys

import pytest

from unet_keras.tensorflow_env import (
    FROZEN_WEIGHTS_VARIABLE,
    ONEDNN_VARIABLE,
    FrozenWeightsError,
    check_weights_not_frozen,
    enable_onednn,
)

pytestmark = pytest.mark.backends


@pytest.fixture
def before_tensorflow(monkeypatch):
    """A process that has not imported TensorFlow and has no oneDNN setting."""
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delenv(ONEDNN_VARIABLE, raising=False)


def test_enable_onednn_turns_it_on_before_tensorflow_loads(before_tensorflow):
    assert enable_onednn()
    assert os.environ[ONEDNN_VARIABLE] == "1"


def test_enable_onednn_leaves_the_users_choice_alone(before_tensorflow, monkeypatch):
    monkeypatch.setenv(ONEDNN_VARIABLE, "0")
    assert not enable_onednn()
    assert os.environ[ONEDNN_VARIABLE] == "0"


def test_enable_onednn_is_a_no_op_once_tensorflow_is_loaded(before_tensorflow, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    assert not enable_onednn()
    assert ONEDNN_VARIABLE not in os.environ


def test_importing_the_package_sets_it_before_keras_loads():
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_VARIABLE}
    code = (
        "import os, unet_keras, keras; "
        f"print(os.environ['{ONEDNN_VARIABLE}'], keras.backend.backend())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split()[0] == "1"


def _run(code, env):
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code], env=env, capture_output=True,
        text=True, check=True,
    )


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN advice is for x86"
)
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="runs Keras on TensorFlow, which a JAX or PyTorch install may lack",
)
@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND") not in (None, "tensorflow"),
    reason="its subprocess runs on TensorFlow whatever the backend: the TensorFlow pass runs it",
)
def test_importing_keras_first_warns_when_tensorflow_runs_without_onednn():
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_VARIABLE}
    env["KERAS_BACKEND"] = "tensorflow"
    code = (
        "import keras, unet_keras; "
        "from unet_keras.tensorflow_env import onednn_enabled; print(onednn_enabled())"
    )
    result = _run(code, env)
    enabled = result.stdout.split()[-1]
    assert enabled in ("True", "False")  # TensorFlow answered
    warned = "imported before unet_keras" in result.stderr
    assert warned == (enabled == "False")  # False on AVX2-only x86 CPUs like CI's

    result = _run(code, {**env, ONEDNN_VARIABLE: "0"})  # the user's choice: no warning
    assert result.stdout.split()[-1] == "False"
    assert "imported before unet_keras" not in result.stderr


@pytest.mark.parametrize("value", ["1", "true"])
def test_training_is_refused_where_weights_are_assumed_frozen(monkeypatch, value):
    monkeypatch.setenv(FROZEN_WEIGHTS_VARIABLE, value)
    with pytest.raises(FrozenWeightsError, match="Unset it for training"):
        check_weights_not_frozen()
    assert issubclass(FrozenWeightsError, RuntimeError)  # what train raised before


def test_training_is_allowed_otherwise(monkeypatch):
    monkeypatch.delenv(FROZEN_WEIGHTS_VARIABLE, raising=False)
    check_weights_not_frozen()
    monkeypatch.setenv(FROZEN_WEIGHTS_VARIABLE, "0")
    check_weights_not_frozen()
