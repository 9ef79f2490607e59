import sys

import pytest

from unet_keras.backend_utils import (
    DeviceInfo,
    KeepFreedMemory,
    choose_precision,
    detect_device,
    supports_jit,
)

pytestmark = pytest.mark.backends

CPU = DeviceInfo("tensorflow", "CPU", "host", bf16=False)
AMPERE = DeviceInfo("tensorflow", "GPU", "A100", bf16=True)
TURING = DeviceInfo("torch", "GPU", "T4", bf16=False)


def test_detect_device_on_this_machine():
    device = detect_device()
    assert device.kind in ("CPU", "GPU")
    assert device.backend in str(device)


def test_precision_follows_the_device():
    assert choose_precision("auto", CPU) == "float32"
    assert choose_precision("auto", AMPERE) == "mixed_bfloat16"
    assert choose_precision("auto", TURING) == "mixed_float16"
    assert choose_precision("off", AMPERE) == "float32"
    assert choose_precision("mixed_float16", CPU) == "mixed_float16"
    with pytest.raises(ValueError, match="mixed_precision"):
        choose_precision("fp8", CPU)


def test_xla_only_on_gpus_of_backends_that_compile():
    assert not supports_jit(CPU)
    assert supports_jit(AMPERE)
    assert not supports_jit(TURING)  # torch


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt is Linux-only")
def test_keep_freed_memory_sets_glibc_thresholds():
    callback = KeepFreedMemory()
    assert callback._libc is not None
    callback.on_train_batch_begin(0)
    assert callback._libc.mallopt(KeepFreedMemory.M_MMAP_THRESHOLD, callback.mmap_threshold) == 1
