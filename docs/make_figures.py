"""Makes the README's gallery from a finished run folder.

    python docs/make_figures.py runs/default

writes docs/segmentation.png (input, ground truth, prediction overlay and error
map of a held-out slice), docs/curves.png (the run's training curves) and
docs/merges.png (the two costliest merges of the held-out slice with the lowest
V_rand after the watershed, at the stack's best threshold).
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import json  # noqa: E402

import numpy as np  # noqa: E402
import tifffile  # noqa: E402

from unet_keras.datasets import load_isbi2012  # noqa: E402
from unet_keras.errors import segmentation_errors  # noqa: E402
from unet_keras.plots import (  # noqa: E402
    error_map,
    overlay,
    plot_history,
    show_images,
    show_segment_errors,
)

DOCS = Path(__file__).resolve().parent


def main(run_dir):
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    images, masks = load_isbi2012(config["data_dir"])
    val_slices = metrics["val_slices"]
    probs = tifffile.imread(run_dir / "predictions" / "val.tif")
    i = len(val_slices) // 2
    image, mask, prob = images[val_slices[i]], masks[val_slices[i]], probs[i]
    crop = (slice(128, 384), slice(128, 384))  # a 256x256 window: membranes are thin
    figure = show_images(
        [image[crop], 1 - mask[crop], overlay(image[crop], prob[crop]),
         error_map(image[crop], prob[crop], mask[crop])],
        titles=[f"held-out slice {val_slices[i]}", "ground truth (white = cell)",
                "predicted membrane", "errors: orange FP, blue FN"],
    )
    figure.savefig(DOCS / "segmentation.png", dpi=90)
    plot_history(run_dir / "history.csv", DOCS / "curves.png", title=f"Run {config['name']}")

    scores = metrics["val_watershed"]
    worst = int(np.argmin(scores["v_rand_per_slice"]))
    closed = tifffile.imread(run_dir / "predictions" / "val_watershed.tif")
    errors = segmentation_errors(
        closed[worst], masks[val_slices[worst]], threshold=scores["v_rand_threshold"]
    )
    figure = show_segment_errors(images[val_slices[worst]], errors, count=2)
    figure.suptitle(f"held-out slice {val_slices[worst]}: V_rand {errors.v_rand:.4f} "
                    "with the watershed", y=1.0)
    figure.savefig(DOCS / "merges.png", dpi=80, bbox_inches="tight")
    print(f"Wrote {DOCS / 'segmentation.png'}, {DOCS / 'curves.png'} and {DOCS / 'merges.png'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/default")
