"""Speed of the ISBI 2012 scoring: seconds per 512x512 slice and threshold.

    python benchmarks/bench_evaluate.py [--root data/isbi2012] [--slices 5] [--repeats 3]

Scores `--slices` ISBI 2012 training labels (downloaded into `--root` from
UNET_KERAS_DATA_URL or the public source, as `bench_train.py` does; files
already there are kept) against a prediction made from them: the labels
blurred and with noise added, so that thresholds cut it into segments with
gaps and specks rather than into a copy of the labels. The target is well under a second per
slice and threshold.
"""

import argparse
import time

import cv2
import numpy as np

from unet_keras.datasets import download_isbi2012, load_isbi2012
from unet_keras.evaluate import THRESHOLDS, score_isbi


def _noisy_prediction(masks, seed=0):
    rng = np.random.default_rng(seed)
    blurred = np.stack([cv2.GaussianBlur(m.astype(np.float32), (0, 0), 2.0) for m in masks])
    return np.clip(blurred + rng.normal(0.0, 0.15, blurred.shape), 0.0, 1.0).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/isbi2012")
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = download_isbi2012(args.root, progress=False)
    masks = load_isbi2012(root)[1][: args.slices, ..., 0]
    prob = _noisy_prediction(masks)
    score_isbi(prob[:1], masks[:1])  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        scores = score_isbi(prob, masks)
        times.append(time.perf_counter() - start)
    per = min(times) / (len(masks) * len(THRESHOLDS))
    print(f"ISBI 2012 labels from {root}; {len(masks)} slices x {len(THRESHOLDS)} "
          f"thresholds, best of {args.repeats}")
    print(f"  score_isbi: {min(times):.2f} s in all, {1000 * per:.0f} ms per slice and threshold")
    print(f"  (V_rand {scores['v_rand']:.3f}, V_info {scores['v_info']:.3f} for the noisy map)")


if __name__ == "__main__":
    main()
