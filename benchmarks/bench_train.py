"""Training throughput of the default CPU and GPU configurations.

    python benchmarks/bench_train.py [--steps 10] [--preset cpu|gpu|both]

For each configuration it builds the model exactly as `train` does, feeds it
real augmented ISBI 2012 tiles from `TileDataset` (data from
UNET_KERAS_DATA_URL or the public source, into data/isbi2012), and prints
training tiles per second, seconds per step, and the model's training FLOP
rate (3x the forward FLOPs of a tile: forward, and backward for inputs and
weights) next to NumPy's float32 matmul rate on the same machine.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from bench_inference import matmul_rate  # noqa: E402

from unet_keras.backend_utils import choose_precision, detect_device, supports_jit  # noqa: E402
from unet_keras.datasets import download_isbi2012, load_isbi2012  # noqa: E402
from unet_keras.inference import forward_flops  # noqa: E402
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--preset", choices=("cpu", "gpu", "both"), default="both")
    args = parser.parse_args()

    images, masks = load_isbi2012(download_isbi2012(progress=False))
    rate = matmul_rate()
    print(f"Device: {detect_device()}; NumPy float32 matmul: {rate / 1e9:.0f} GFLOP/s")
    presets = {"cpu": TrainConfig(), "gpu": TrainConfig.for_gpu()}
    for name, config in presets.items():
        if args.preset not in (name, "both"):
            continue
        seconds, flops = measure(config, images[:25], masks[:25], args.steps)
        tiles = config.batch_size / seconds
        print(
            f"{name}: filters {config.filters}, tile {config.tile_size}, batch "
            f"{config.batch_size}: {seconds:.3f} s/step, {tiles:.2f} tiles/s, "
            f"{flops / seconds / 1e9:.0f} GFLOP/s ({flops / seconds / rate:.2f}x NumPy matmul)"
        )


if __name__ == "__main__":
    main()
