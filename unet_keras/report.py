"""The last stage of a run: predicting the held-out and the test slices,
scoring the held-out ones like the ISBI leaderboard, and writing what a user
reads afterwards (predictions/, overlays/, metrics.json), with the summary
that `train` prints at the end (`format_scores`).
"""

import json
import time

import numpy as np
import tifffile

from unet_keras.agglomeration import MergeClassifier, NothingToLearn, agglomerate_cells
from unet_keras.evaluate import score_isbi
from unet_keras.inference import predict_tiled
from unet_keras.plots import save_overlays
from unet_keras.postprocess import draw_lines, ridge_membranes, watershed_cells


def predict_slices(model, images, config):
    """Membrane probabilities of whole slices with overlap-tile inference.

    A same-padded model sees each 512x512 slice in one tile with 32 pixels of
    mirrored context on every side: 1.27x the FLOPs of the bare slice, where
    the default 256-pixel tiles would cost 2.25x.

    Args:
        model: A single-output model (BatchNorm folded or not).
        images: Slices, `(N, H, W, 1)`.
        config: The run's `TrainConfig` (padding, depth, batch size, TTA).

    Returns:
        The probabilities, `(N, H, W)`.
    """
    tile, overlap = None, None
    if config.padding == "same":
        tile, overlap = max(images.shape[1:3]) + 64, 64
        tile += -tile % 2**config.depth
    return predict_tiled(
        model, images, tile=tile, overlap=overlap, batch_size=config.batch_size, tta=config.tta
    )[..., 0]


def predict_and_score(model, config, run_dir, held_out, test_images, metrics, training=None):
    """Predicts, scores and writes the held-out and the test slices of a run.

    Writes `predictions/val.tif` and `predictions/test.tif` (float32 membrane
    probabilities, in slice order), both again with their boundaries redrawn
    on the ridges (`*_ridges.tif`, with `config.ridges`) and with the gaps
    closed (`*_watershed.tif`), the overlays of the held-out slices if the config
    asks for them, and `metrics.json`. With `config.learned_merging` it also
    fits the learned merging on the network's maps of the training slices
    (`merge_classifier.json`) and writes both stacks merged by it
    (`*_agglomerated.tif`).

    Args:
        model: The run's final single-output model.
        config: The run's `TrainConfig`.
        run_dir: The run folder.
        held_out: `(images, masks)` of the held-out slices, whose indices are
            `metrics["val_slices"]`.
        test_images: The 30 test slices.
        metrics: What the run has recorded so far.
        training: `(images, masks)` of the training slices, for the learned
            merging; None skips it.

    Returns:
        A copy of `metrics` with the scores and `predict_seconds` added, as
        written to `metrics.json`.
    """
    images, masks = held_out
    metrics = dict(metrics)
    start = time.perf_counter()
    predictions = run_dir / "predictions"
    predictions.mkdir(exist_ok=True)
    val_prob = predict_slices(model, images, config)
    tifffile.imwrite(predictions / "val.tif", val_prob.astype("float32"))
    metrics["val"] = score_isbi(val_prob, masks)
    val_under = val_prob  # what the watershed's and the merging's lines are drawn over
    if config.ridges:
        val_under = ridge_membranes(val_prob)
        tifffile.imwrite(predictions / "val_ridges.tif", val_under)
        metrics["val_ridges"] = score_isbi(val_under, masks)
    val_closed = draw_lines(watershed_cells(val_prob), val_under)
    tifffile.imwrite(predictions / "val_watershed.tif", val_closed)
    metrics["val_watershed"] = score_isbi(val_closed, masks)
    if config.overlays:
        save_overlays(
            run_dir / "overlays", images, val_prob, masks,
            names=[f"val_{i:02d}" for i in metrics["val_slices"]],
        )
    test_prob = predict_slices(model, test_images, config)
    tifffile.imwrite(predictions / "test.tif", test_prob.astype("float32"))
    test_under = test_prob
    if config.ridges:
        test_under = ridge_membranes(test_prob)
        tifffile.imwrite(predictions / "test_ridges.tif", test_under)
    tifffile.imwrite(predictions / "test_watershed.tif",
                     draw_lines(watershed_cells(test_prob), test_under))
    classifier = None
    if config.learned_merging and training is not None:
        try:
            classifier = fit_learned_merging(model, config, run_dir, *training)
        except NothingToLearn as error:
            metrics["learned_merging"] = f"skipped: {error}"
    if classifier is not None:
        val_merged = draw_lines(agglomerate_cells(val_prob, images, classifier), val_under)
        tifffile.imwrite(predictions / "val_agglomerated.tif", val_merged)
        metrics["val_agglomerated"] = score_isbi(val_merged, masks)
        tifffile.imwrite(
            predictions / "test_agglomerated.tif",
            draw_lines(agglomerate_cells(test_prob, test_images, classifier), test_under),
        )
    metrics["predict_seconds"] = round(time.perf_counter() - start, 1)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_to_builtin))
    return metrics


def fit_learned_merging(model, config, run_dir, images, masks):
    """The run's `MergeClassifier`, fitted on its own maps of its training
    slices and saved as `merge_classifier.json`.

    Args:
        model: The run's final single-output model.
        config: The run's `TrainConfig`.
        run_dir: The run folder.
        images, masks: The training slices and their ground truth.

    Returns:
        The fitted `MergeClassifier`.
    """
    classifier = MergeClassifier.fit(predict_slices(model, images, config), images, masks)
    classifier.save(run_dir / "merge_classifier.json")
    return classifier


def _to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON.")


def format_scores(metrics):
    """A short text summary of a run's metrics, with the score of each held-out slice,
    and why the learned merging was skipped where `metrics` records that it was."""
    tuned = metrics.get("malis_seconds")  # absent from an older release's metrics.json
    lines = [
        f"Trained {metrics['train_seconds']:.0f} s on {metrics['device']}"
        + (f", then fine-tuned against merges for {tuned:.0f} s." if tuned else ".")
    ]
    titles = {
        "val": "Held-out slices", "val_ridges": "On the ridges (val_ridges.tif)",
        "val_watershed": "With the watershed (val_watershed.tif)",
        "val_agglomerated": "With the learned merging (val_agglomerated.tif)",
    }
    for key, title in titles.items():
        scores = metrics.get(key)
        if not scores:
            continue
        line = (
            f"{title} {metrics['val_slices']}: V_rand {scores['v_rand']:.4f} "
            f"(threshold {scores['v_rand_threshold']:.1f}), V_info {scores['v_info']:.4f} "
            f"(threshold {scores['v_info_threshold']:.1f})"
        )
        if key == "val":  # the others draw one-pixel lines: their pixel scores mean little
            line += (f", pixel error {scores['pixel_error']:.4f}, Dice {scores['dice']:.4f}, "
                     f"IoU {scores['iou']:.4f}")
        lines.append(line)
        if "v_rand_per_slice" in scores:  # absent from an older release's metrics.json
            per_slice = zip(
                metrics["val_slices"], scores["v_rand_per_slice"], scores["v_info_per_slice"]
            )
            lines.append(
                "  per slice: " + ", ".join(f"{i}: {r:.4f} / {v:.4f}" for i, r, v in per_slice)
            )
    # predict_and_score records "skipped: <why>" where the run asked for the learned merging
    # but found nothing to fit it on: said, so that a missing line above is not a mystery.
    merging = metrics.get("learned_merging", "")
    if isinstance(merging, str) and merging.startswith("skipped: "):
        lines.append(f"learned merging skipped: {merging.removeprefix('skipped: ')}")
    return "\n".join(lines)
