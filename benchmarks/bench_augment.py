"""Augmentation throughput on one core: augmented 512x512 image + mask + weight
map triples per second, and the time of one border weight map.

    python benchmarks/bench_augment.py [--root data/isbi2012] [--seconds 3]

Uses the ISBI 2012 training slices from `--root` (or the shared mirror) when
present, else synthetic images of the same size.
"""

import os

# One core: set before NumPy and OpenCV start their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from unet_keras.augment import Augmenter, elastic_deform  # noqa: E402
from unet_keras.datasets import load_isbi2012  # noqa: E402
from unet_keras.weights import border_weight_map, border_weight_maps  # noqa: E402

MIRROR = Path(__file__).resolve().parents[2] / "shared" / "isbi2012"


def _data(root, n=4):
    for folder in (root, MIRROR):
        if folder and (Path(folder) / "train" / "image").is_dir():
            images, masks = load_isbi2012(folder)
            return images[:n], masks[:n], f"ISBI 2012 slices from {folder}"
    rng = np.random.default_rng(0)
    images = rng.random((n, 512, 512, 1), dtype=np.float32)
    # Blur each slice on its own (sigma 0 across slices and the channel) so the
    # mask has blobs rather than salt and pepper; it keeps the (n, H, W, 1) shape.
    blurred = gaussian_filter(images, sigma=(0, 3, 3, 0))
    masks = (blurred < 0.5).astype(np.float32)
    return images, masks, "synthetic 512x512 images"


def _rate(step, seconds):
    """Calls of `step(i)` per CPU second of this (single-threaded) process,
    over about `seconds`, after a warm-up. CPU time rather than wall time
    keeps the figure per core on a machine that other jobs share."""
    for i in range(5):
        step(i)
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        step(count)
        count += 1
    return count / (time.process_time() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/isbi2012")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    images, masks, source = _data(args.root)
    weights = border_weight_maps(masks)
    rng = np.random.default_rng(0)
    n = len(images)

    cases = {
        "elastic deformation": lambda i: elastic_deform(
            images[i % n], masks[i % n], weights[i % n], rng=rng, kinds=("mask", "weight")
        ),
        "elastic + flips/rotations + gray values": Augmenter(affine=False),
        "full (+ rotation/shift), whole image": Augmenter(),
        "full, 572 -> 388 valid tiles": Augmenter(572, 388),
    }
    print(f"{source}; 1 thread; pairs (image + mask + weight map) per CPU second:")
    for name, augment in cases.items():
        if isinstance(augment, Augmenter):
            rate = _rate(lambda i, a=augment: a(rng, images[i % n], masks[i % n],
                                                weights[i % n]), args.seconds)
        else:
            rate = _rate(augment, args.seconds)
        print(f"  {name:42s} {rate:7.1f} /s")
    rate = _rate(lambda i: border_weight_map(masks[i % n]), args.seconds)
    print(f"border weight map of a 512x512 label (w0=10, sigma=5): {1000 / rate:.0f} ms")


if __name__ == "__main__":
    main()
