"""Backend-specific helpers: which accelerator Keras sees, and what precision
it supports.

With `tensorflow_env` (TensorFlow's start-up settings), this is the only
module that talks to TensorFlow, PyTorch or JAX directly; everything else in
the package goes through `keras` and `keras.ops`.
"""

import ctypes
import importlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import keras

from unet_keras.tensorflow_env import onednn_enabled


@dataclass(frozen=True)
class DeviceInfo:
    """What the current Keras backend will compute on."""

    backend: str
    kind: str  # "GPU" or "CPU"
    name: str
    bf16: bool  # the GPU computes in bfloat16 natively (compute capability >= 8)

    def __str__(self):
        return f"{self.kind} ({self.name}) via the {self.backend} backend"


def _tensorflow_device():
    tf = importlib.import_module("tensorflow")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability") or (0, 0)
    return details.get("device_name", gpus[0].name), tuple(capability) >= (8, 0)


def _torch_device():
    torch = importlib.import_module("torch")
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0), bool(torch.cuda.is_bf16_supported())


def _jax_device():
    jax = importlib.import_module("jax")
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        return None
    capability = getattr(gpus[0], "compute_capability", "0")
    return gpus[0].device_kind, float(capability or 0) >= 8.0


_PROBES = {"tensorflow": _tensorflow_device, "torch": _torch_device, "jax": _jax_device}


def detect_device():
    """Returns a `DeviceInfo` for the GPU Keras will use, or the CPU."""
    backend = keras.backend.backend()
    probe = _PROBES.get(backend)
    found = probe() if probe else None
    if found is None:
        return DeviceInfo(backend, "CPU", "host", bf16=False)
    name, bf16 = found
    return DeviceInfo(backend, "GPU", name, bf16=bf16)


# How each backend's pip packages come to see an NVIDIA GPU.
_CUDA_BUILDS = {
    "tensorflow": "pip install \"tensorflow[and-cuda]\" installs the CUDA libraries that "
                  "TensorFlow's wheel needs (`make install` does so on a machine where "
                  "nvidia-smi lists a GPU)",
    "torch": "install a CUDA build of PyTorch (https://pytorch.org/get-started/locally/)",
    "jax": "pip install \"jax[cuda13]\" (\"jax[cuda12]\" for an older driver) installs "
           "JAX's CUDA plugin",
}


def nvidia_gpu_present(driver_dir="/proc/driver/nvidia/gpus"):
    """Whether the machine has an NVIDIA GPU, whatever the backend sees.

    Args:
        driver_dir: Where the NVIDIA driver lists its GPUs on Linux.

    Returns:
        True if the driver lists a GPU there, or `nvidia-smi` is on the PATH.
    """
    try:
        if any(Path(driver_dir).iterdir()):
            return True
    except OSError:
        pass
    return shutil.which("nvidia-smi") is not None


def unseen_gpu_hint(device):
    """A sentence for a machine with an NVIDIA GPU that the backend computes
    beside, on the CPU; None where there is nothing to say.

    Args:
        device: A `DeviceInfo` (`detect_device`).

    Returns:
        The sentence, which says how to install the backend's CUDA build, or None.
    """
    if device.kind == "GPU" or not nvidia_gpu_present():
        return None
    fix = _CUDA_BUILDS.get(device.backend, f"install a CUDA build of {device.backend}")
    return (
        f"This machine has an NVIDIA GPU, but Keras's {device.backend} backend does not see "
        f"it, so this trains on the CPU. To train on the GPU: {fix}."
    )


# Seconds per training step of the CPU preset on a 2-core AMD EPYC (Zen 1, AVX2),
# `benchmarks/bench_train.py --backend-ratio`, December 2026.
_CPU_SECONDS_PER_STEP = {"tensorflow": 1.6, "jax": 3.8, "torch": 2.3}


def slow_cpu_backend_hint(device):
    """A sentence for training on the CPU with a backend other than TensorFlow;
    None where there is nothing to say.

    On CPUs TensorFlow's oneDNN kernels train the package's models faster
    than the other backends (docs/results.md, *Speed on CPUs*).

    Args:
        device: A `DeviceInfo` (`detect_device`).

    Returns:
        The sentence, which names the measured gap and the fix, or None.
    """
    if device.kind != "CPU" or device.backend == "tensorflow":
        return None
    fast = _CPU_SECONDS_PER_STEP["tensorflow"]
    slow = _CPU_SECONDS_PER_STEP.get(device.backend)
    measured = (
        f"takes {slow / fast:.1f} times TensorFlow's time per training step on CPUs (a step "
        f"of the CPU preset: {slow} s against {fast} s on a 2-core AMD EPYC)" if slow else
        "trains slower on CPUs than TensorFlow, whose oneDNN kernels are the fastest there"
    )
    return (
        f"Keras's {device.backend} backend {measured}. To train faster on this CPU, "
        f"unset KERAS_BACKEND (TensorFlow is the default); "
        f"benchmarks/bench_train.py --backend-ratio compares the backends on this machine."
    )


def choose_precision(requested, device):
    """Resolves a mixed-precision request to a Keras dtype policy name.

    Args:
        requested: `"auto"`, `"off"`/`"float32"`, `"mixed_float16"` or
            `"mixed_bfloat16"`.
        device: A `DeviceInfo`.

    Returns:
        The policy name for `keras.mixed_precision.set_dtype_policy`. `"auto"`
        gives `mixed_bfloat16` on GPUs that support it, `mixed_float16` on
        other GPUs, and float32 on the CPU. Most CPUs emulate 16-bit floats
        and train slower with them; CPUs with bfloat16 instructions
        (AVX512_BF16, AMX) train 1.2-1.4x faster with `mixed_bfloat16` on
        TensorFlow (`benchmarks/bench_train.py --precision-ratio`), which
        must be asked for by name, so that "auto" gives the same numbers on
        every CPU.
    """
    choices = ("auto", "off", "float32", "mixed_float16", "mixed_bfloat16")
    if requested not in choices:
        raise ValueError(f"`mixed_precision` must be one of {choices}, got {requested!r}.")
    if requested == "auto":
        if device.kind != "GPU":
            return "float32"
        return "mixed_bfloat16" if device.bf16 else "mixed_float16"
    return "float32" if requested == "off" else requested


def cpu_has_bfloat16(cpuinfo="/proc/cpuinfo"):
    """Whether the CPU has bfloat16 arithmetic (AVX512_BF16 or AMX-BF16).

    Args:
        cpuinfo: Linux's CPU description, whose `flags` line names the
            instruction sets.

    Returns:
        True if the flags name one of them; False if not, or where the file
        cannot be read (other systems).
    """
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return False
    flags = next((line.partition(":")[2] for line in lines if line.startswith("flags")), "")
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def computes_bfloat16_on_cpu(device):
    """Whether `mixed_bfloat16` is fast on this machine's CPU: TensorFlow with
    its oneDNN kernels on a CPU with bfloat16 instructions.

    There oneDNN computes the convolutions in bfloat16 (1.2-1.4x faster
    training steps, measured); other CPUs and backends emulate it and slow
    down.
    """
    if device.kind != "CPU" or device.backend != "tensorflow" or not cpu_has_bfloat16():
        return False
    return onednn_enabled() is True


def supports_jit(device):
    """Whether `"auto"` compiles the training step with XLA.

    JAX always: without it every operation is dispatched on its own (a
    training step of the CPU preset took 4.8 s uncompiled and 3.8 s compiled
    on a 2-core CPU). TensorFlow on GPUs only: on CPUs its XLA path was no
    faster than its oneDNN kernels (docs/results.md, *Benchmarks*). PyTorch
    never: Keras has no XLA for it.
    """
    if device.backend == "jax":
        return True
    return device.kind == "GPU" and device.backend == "tensorflow"


def _glibc():
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another C library: nothing to tune
        return None


class KeepFreedMemory(keras.callbacks.Callback):
    """Stops glibc from returning every freed tensor to the OS (Linux only).

    TensorFlow's `tf.data` generator op, through which Keras feeds a
    `PyDataset`, sets glibc's `M_TRIM_THRESHOLD` to 128 KB. Setting it also
    freezes glibc's mmap threshold at 128 KB, so every activation map is
    mapped and unmapped again at each step, and the page faults cost about as
    much system time as the convolutions take (measured: 16.8 s of system
    time for 12 training steps of the default CPU model, 4.5 s with this).
    At the start of each epoch, after the generator op has run, this puts
    both thresholds back where freed memory is reused.
    """

    M_TRIM_THRESHOLD = -1
    M_MMAP_THRESHOLD = -3

    def __init__(self, mmap_threshold=32 * 2**20, trim_threshold=256 * 2**20):
        super().__init__()
        self.mmap_threshold = mmap_threshold
        self.trim_threshold = trim_threshold
        self._libc = _glibc()

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0 and self._libc is not None:
            self._libc.mallopt(self.M_MMAP_THRESHOLD, self.mmap_threshold)
            self._libc.mallopt(self.M_TRIM_THRESHOLD, self.trim_threshold)
