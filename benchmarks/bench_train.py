"""Training throughput of the default CPU and GPU configurations.

    python benchmarks/bench_train.py [--steps 10] [--preset cpu|gpu|both]
        [--onednn-ratio] [--precision-ratio] [--malis-ratio]
        [--backend-ratio [BACKEND[=PYTHON] ...]]

For each configuration it builds the model exactly as `train` does, feeds it
real augmented ISBI 2012 tiles from `TileDataset` (data from
UNET_KERAS_DATA_URL or the public source, into data/isbi2012), and prints
training tiles per second, seconds per step, and the model's training FLOP
rate (3x the forward FLOPs of a tile: forward, and backward for inputs and
weights) next to NumPy's float32 matmul rate on the same machine.

`--onednn-ratio` runs the measurement twice more, in fresh processes with
TensorFlow's oneDNN kernels off and on (TF_ENABLE_ONEDNN_OPTS=0/1, which
must be set before TensorFlow loads), and prints the speed-up that
`unet_keras.tensorflow_env.enable_onednn` buys on this CPU.

`--precision-ratio` times the CPU preset in float32 and in `mixed_bfloat16`
and prints the speed-up. On CPUs with bfloat16 instructions (AVX512_BF16,
AMX) oneDNN computes the convolutions in bfloat16; elsewhere it emulates
them, and the ratio falls below 1.

`--malis-ratio` times a step of the fine-tuning against merges (a prediction
of the batch, `merge_weight_maps` on its tiles, then the training step) next
to a plain training step of the CPU preset, and the merge weights alone.

`--backend-ratio` times the CPU preset on each Keras backend, each in a fresh
process with KERAS_BACKEND set (by default TensorFlow, JAX and PyTorch, with
this Python; `jax=.venv-jax/bin/python` names another interpreter for one),
and prints each one's time per step next to TensorFlow's. A backend that the
interpreter cannot import is reported and skipped.
"""

import argparse
import os
import re
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import unet_keras  # noqa: E402, F401, I001  (first: it turns oneDNN on before TensorFlow loads)
import keras  # noqa: E402
from bench_inference import matmul_rate  # noqa: E402

from unet_keras.backend_utils import choose_precision, detect_device, supports_jit  # noqa: E402
from unet_keras.datasets import download_isbi2012, load_isbi2012  # noqa: E402
from unet_keras.model import forward_flops  # noqa: E402
from unet_keras.losses import BCEDiceLoss  # noqa: E402
from unet_keras.malis import MergeWeightedLoss, merge_step, merge_weight_maps  # noqa: E402
from unet_keras.pipeline import TileDataset  # noqa: E402
from unet_keras.train import TrainConfig, build_model, compile_model  # noqa: E402


def measure(config, images, masks, steps):
    device = detect_device()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(choose_precision(config.mixed_precision, device))
    try:
        model = compile_model(build_model(config), config, jit_compile=supports_jit(device))
    finally:
        keras.config.set_dtype_policy(previous)
    data = TileDataset(
        images, masks, tile_size=config.tile_size, batch_size=config.batch_size, steps=steps + 2
    )
    for i in range(2):  # warm-up: tracing and compilation
        model.train_on_batch(*data[i])
    start = time.perf_counter()
    for i in range(2, steps + 2):
        model.train_on_batch(*data[i])
    seconds = (time.perf_counter() - start) / steps
    flops = 3 * forward_flops(model, (config.tile_size, config.tile_size)) * config.batch_size
    return seconds, flops


def report(name, config, seconds, flops, rate):
    tiles = config.batch_size / seconds
    print(
        f"{name}: filters {config.filters}, tile {config.tile_size}, batch "
        f"{config.batch_size}: {seconds:.3f} s/step, {tiles:.2f} tiles/s, "
        f"{flops / seconds / 1e9:.0f} GFLOP/s ({flops / seconds / rate:.2f}x NumPy matmul)"
    )


def precision_ratio(images, masks, steps, rate):
    """Seconds per step of the CPU preset in float32 and in mixed_bfloat16."""
    seconds = {}
    for precision in ("float32", "mixed_bfloat16"):
        config = TrainConfig(mixed_precision=precision)
        seconds[precision], flops = measure(config, images, masks, steps)
        report(f"cpu, {precision}", config, seconds[precision], flops, rate)
    speed_up = seconds["float32"] / seconds["mixed_bfloat16"]
    print(f"mixed_bfloat16 speed-up on this CPU: {speed_up:.2f}x")


def malis_ratio(images, masks, steps):
    """Seconds per fine-tuning step against merges, and per plain step."""
    config = TrainConfig()
    plain, _ = measure(config, images, masks, steps)
    model = build_model(config)
    model.compile(optimizer="adam", loss=MergeWeightedLoss(BCEDiceLoss()))  # as train does
    data = TileDataset(
        images, masks, tile_size=config.tile_size, batch_size=config.batch_size, steps=steps + 2
    )
    for i in range(2):  # warm-up: tracing and compilation
        merge_step(model, *data[i])
    start = time.perf_counter()
    for i in range(2, steps + 2):
        merge_step(model, *data[i])
    tuned = (time.perf_counter() - start) / steps
    x, y = data[0]
    probs = keras.ops.convert_to_numpy(model.predict_on_batch(x))
    begin = time.perf_counter()
    for _ in range(steps):
        merge_weight_maps(probs, y)
    weight_seconds = time.perf_counter() - begin
    print(
        f"cpu: plain step {plain:.3f} s, fine-tuning step against merges {tuned:.3f} s "
        f"({tuned / plain:.2f}x), of which merge weights {weight_seconds / steps:.3f} s "
        f"({1000 * weight_seconds / steps / config.batch_size:.0f} ms per "
        f"{config.tile_size}x{config.tile_size} tile)"
    )


def measure_in_fresh_process(preset, steps, env, python=sys.executable):
    """This script's line for `preset`, run by `python` with `env` (settings that
    must be made before Keras or TensorFlow loads), and its seconds per step."""
    command = [python, __file__, "--preset", preset, "--steps", str(steps)]
    output = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    line = next(x for x in output.stdout.splitlines() if x.startswith(f"{preset}:"))
    return line, float(re.search(r"([0-9.]+) s/step", line).group(1))


def onednn_ratio(preset, steps):
    """Seconds per step with oneDNN off and on, each in a fresh process."""
    seconds = {}
    for flag in ("0", "1"):
        env = {"TF_ENABLE_ONEDNN_OPTS": flag}
        line, seconds[flag] = measure_in_fresh_process(preset, steps, env)
        print(f"oneDNN {'on ' if flag == '1' else 'off'}: {line}")
    print(f"oneDNN speed-up on this CPU: {seconds['0'] / seconds['1']:.2f}x")


def backend_ratio(backends, steps):
    """Seconds per step of the CPU preset on each backend, each in a fresh process."""
    seconds = {}
    for spec in backends:
        backend, _, python = spec.partition("=")
        python = python or sys.executable
        probe = f"import importlib.util as u; exit(u.find_spec({backend!r}) is None)"
        if subprocess.run([python, "-c", probe]).returncode != 0:
            print(f"{backend}: not installed for {python}, skipped")
            continue
        env = {"KERAS_BACKEND": backend}
        line, seconds[backend] = measure_in_fresh_process("cpu", steps, env, python)
        print(f"{backend}: {line}")
    if "tensorflow" in seconds:
        for backend, value in seconds.items():
            if backend != "tensorflow":
                print(f"{backend}: {value / seconds['tensorflow']:.1f}x TensorFlow's time per step")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--preset", choices=("cpu", "gpu", "both"), default="both")
    parser.add_argument(
        "--onednn-ratio", action="store_true",
        help="compare TensorFlow with oneDNN off and on (CPU preset only)",
    )
    parser.add_argument(
        "--precision-ratio", action="store_true",
        help="compare float32 with mixed_bfloat16 training (CPU preset only)",
    )
    parser.add_argument(
        "--malis-ratio", action="store_true",
        help="compare a fine-tuning step against merges with a plain step (CPU preset)",
    )
    parser.add_argument(
        "--backend-ratio", nargs="*", metavar="BACKEND[=PYTHON]",
        help="compare the Keras backends on the CPU preset (default: tensorflow jax torch)",
    )
    args = parser.parse_args()
    if args.backend_ratio is not None:
        backend_ratio(args.backend_ratio or ["tensorflow", "jax", "torch"], args.steps)
        return
    if args.onednn_ratio:
        onednn_ratio("cpu", args.steps)
        return

    images, masks = load_isbi2012(download_isbi2012(progress=False))
    rate = matmul_rate()
    print(f"Device: {detect_device()}; NumPy float32 matmul: {rate / 1e9:.0f} GFLOP/s")
    if args.precision_ratio:
        precision_ratio(images[:25], masks[:25], args.steps, rate)
        return
    if args.malis_ratio:
        malis_ratio(images[:25], masks[:25], args.steps)
        return
    presets = {"cpu": TrainConfig(), "gpu": TrainConfig.for_gpu()}
    for name, config in presets.items():
        if args.preset not in (name, "both"):
            continue
        seconds, flops = measure(config, images[:25], masks[:25], args.steps)
        report(name, config, seconds, flops, rate)


if __name__ == "__main__":
    main()
