"""TensorFlow settings that must be made before TensorFlow is first imported.

TensorFlow turns its oneDNN kernels on by default on x86 CPUs with AVX-512
VNNI, BF16 or AMX (recent Intel server chips); on the project's 2-core AMD
EPYC (AVX2) they are off and convolutions run through Eigen, which is slow
for the 12-64 channel layers of a CPU-sized U-Net: a `train_on_batch` step
of the default configuration takes 1.4x longer there without oneDNN, of a
12-filter one 1.7x (`benchmarks/bench_train.py --onednn-ratio` measures it).

`unet_keras/__init__.py` calls `enable_onednn()` before anything imports
Keras, so `import unet_keras` first and the setting takes effect. A value the
user already set (`TF_ENABLE_ONEDNN_OPTS=0` to opt out) is left alone.
"""

import os
import sys

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


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
