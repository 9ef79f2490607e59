"""TensorFlow settings: those made before TensorFlow is first imported, and one to refuse.

TensorFlow turns its oneDNN kernels on by default on x86 CPUs with AVX-512
VNNI, BF16 or AMX (recent Intel server chips); on the project's 2-core AMD
EPYC (AVX2) they are off and convolutions run through Eigen, which is slow
for the 12-64 channel layers of a CPU-sized U-Net: a `train_on_batch` step
of the default configuration takes 1.4x longer there without oneDNN, of a
12-filter one 1.7x (`benchmarks/bench_train.py --onednn-ratio` measures it).

`unet_keras/__init__.py` calls `enable_onednn()` before anything imports
Keras, so `import unet_keras` first and the setting takes effect. A value the
user already set (`TF_ENABLE_ONEDNN_OPTS=0` to opt out) is left alone. When
Keras came first and TensorFlow reports oneDNN off, `warn_if_onednn_off`
says so, because the slowdown is otherwise silent.

`check_weights_not_frozen` guards the opposite mistake: oneDNN's inference
setting `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`, under which a model cannot learn.
"""

import os
import platform
import sys
import warnings

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
FROZEN_WEIGHTS_VARIABLE = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"


def enable_onednn():
    """Asks TensorFlow to use oneDNN on every x86 CPU.

    Returns:
        True if the setting can still take effect (TensorFlow is not imported
        yet and the user has not chosen otherwise), else False.
    """
    if "tensorflow" in sys.modules or ONEDNN_VARIABLE in os.environ:
        return False
    os.environ[ONEDNN_VARIABLE] = "1"
    return True


def onednn_enabled():
    """Whether the loaded TensorFlow runs its oneDNN kernels.

    Returns:
        True or False as TensorFlow reports it, or None when TensorFlow is
        not loaded or does not report it.
    """
    if "tensorflow" not in sys.modules:
        return None
    try:  # TensorFlow's own check: the variable, or its default for this CPU
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    is_enabled = getattr(_pywrap_util_port, "IsMklEnabled", None)
    return None if is_enabled is None else bool(is_enabled())


def warn_if_onednn_off():
    """Warns when TensorFlow was loaded first, with oneDNN off on an x86 CPU.

    Returns:
        True if it warned.
    """
    if ONEDNN_VARIABLE in os.environ:  # the user's explicit choice
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if onednn_enabled() is not False:
        return False
    warnings.warn(
        "TensorFlow was imported before unet_keras, and its oneDNN kernels are off on "
        "this CPU: training and inference run 1.4-1.7x slower than they could. Import "
        "unet_keras before keras or tensorflow, or start Python with "
        f"{ONEDNN_VARIABLE}=1 ({ONEDNN_VARIABLE}=0 keeps them off without this warning).",
        stacklevel=3,
    )
    return True


class FrozenWeightsError(RuntimeError):
    """Training refused: `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS` is set. The command
    line prints its message as one `error:` line."""


def check_weights_not_frozen():
    """Refuses to train where TensorFlow's oneDNN caches the weights.

    `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1` is an inference setting: oneDNN then
    keeps its first copy of every convolution's weights for the life of the
    process, so a model trained there silently keeps computing with its
    initial weights and does not learn (measured: a loss that stays at 0.70
    where it falls to 0.26 without it).

    Raises:
        FrozenWeightsError: If the variable is set to a true value.
    """
    value = os.environ.get(FROZEN_WEIGHTS_VARIABLE, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        raise FrozenWeightsError(
            f"{FROZEN_WEIGHTS_VARIABLE}={os.environ[FROZEN_WEIGHTS_VARIABLE]} is set: "
            "TensorFlow's oneDNN would keep using the first weights of every convolution, "
            "and the model would not learn. Unset it for training, e.g. "
            f"`env -u {FROZEN_WEIGHTS_VARIABLE} python -m unet_keras train` (it is meant for "
            "inference-only processes)."
        )
