import sys

import pytest

from unet_keras.backend_utils import (
    DeviceInfo,
    KeepFreedMemory,
    choose_precision,
    computes_bfloat16_on_cpu,
    cpu_has_bfloat16,
    detect_device,
    nvidia_gpu_present,
    slow_cpu_backend_hint,
    supports_jit,
    unseen_gpu_hint,
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


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 vaes", True),  # the AMD EPYC here
        ("fpu avx2 avx512f amx_bf16 amx_tile amx_int8", True),  # Sapphire Rapids
        ("fpu sse2 avx2 fma avx512f avx512_vnni", False),  # AVX-512 without bfloat16
        ("fpu sse2 avx2 fma", False),
    ],
)
def test_cpu_bfloat16_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\nbugs\t\t: z\n")
    assert cpu_has_bfloat16(cpuinfo) is expected
    assert cpu_has_bfloat16(tmp_path / "absent") is False  # no /proc: not Linux


def test_bfloat16_cpu_only_with_tensorflow_on_a_cpu(monkeypatch):
    monkeypatch.setattr("unet_keras.backend_utils.cpu_has_bfloat16", lambda: True)
    assert not computes_bfloat16_on_cpu(AMPERE)  # a GPU: the GPU preset
    assert not computes_bfloat16_on_cpu(DeviceInfo("torch", "CPU", "host", bf16=False))
    assert not computes_bfloat16_on_cpu(DeviceInfo("jax", "CPU", "host", bf16=False))
    monkeypatch.setattr("unet_keras.backend_utils.cpu_has_bfloat16", lambda: False)
    assert not computes_bfloat16_on_cpu(CPU)


def test_xla_where_it_pays():
    assert not supports_jit(CPU)  # TensorFlow's oneDNN kernels are as fast on CPUs
    assert supports_jit(AMPERE)
    assert not supports_jit(TURING)  # torch
    assert supports_jit(DeviceInfo("jax", "CPU", "host", bf16=False))  # else op by op


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt is Linux-only")
def test_keep_freed_memory_sets_glibc_thresholds():
    callback = KeepFreedMemory()
    assert callback._libc is not None
    callback.on_train_batch_begin(0)
    assert callback._libc.mallopt(KeepFreedMemory.M_MMAP_THRESHOLD, callback.mmap_threshold) == 1


def test_nvidia_gpu_from_the_driver_or_nvidia_smi(tmp_path, monkeypatch):
    driver = tmp_path / "gpus"
    driver.mkdir()
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    monkeypatch.setenv("PATH", str(empty_path))
    assert not nvidia_gpu_present(driver)
    assert not nvidia_gpu_present(tmp_path / "no-driver")
    (driver / "0000:00:05.0").mkdir()
    assert nvidia_gpu_present(driver)
    smi = empty_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    assert nvidia_gpu_present(tmp_path / "no-driver")


def test_a_gpu_the_backend_does_not_see_gets_a_hint(monkeypatch):
    import unet_keras.backend_utils

    monkeypatch.setattr(unet_keras.backend_utils, "nvidia_gpu_present", lambda: False)
    assert unseen_gpu_hint(CPU) is None
    monkeypatch.setattr(unet_keras.backend_utils, "nvidia_gpu_present", lambda: True)
    assert unseen_gpu_hint(AMPERE) is None
    hint = unseen_gpu_hint(CPU)
    assert "does not see" in hint and "tensorflow[and-cuda]" in hint
    for backend, fix in (("jax", "jax[cuda13]"), ("torch", "CUDA build of PyTorch")):
        assert fix in unseen_gpu_hint(DeviceInfo(backend, "CPU", "host", False))


def test_training_on_the_cpu_with_a_slower_backend_gets_a_hint():
    assert slow_cpu_backend_hint(CPU) is None  # TensorFlow: the fast one on CPUs
    assert slow_cpu_backend_hint(TURING) is None  # a GPU: nothing to say
    for backend, says in (("jax", "takes 2.4 times TensorFlow's time per training step"),
                          ("torch", "takes 1.4 times TensorFlow's time per training step"),
                          ("openvino", "trains slower on CPUs than TensorFlow")):
        hint = slow_cpu_backend_hint(DeviceInfo(backend, "CPU", "host", False))
        assert f"Keras's {backend} backend {says}" in hint
        assert "unset KERAS_BACKEND" in hint and "--backend-ratio" in hint
