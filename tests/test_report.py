"""Tests for unet_keras/report.py: the prediction-and-scoring stage of a run
and the summary printed at its end."""

import json

import keras
import numpy as np
import pytest
import tifffile

from unet_keras.agglomeration import MergeClassifier, agglomerate_membranes
from unet_keras.datasets import load_isbi2012
from unet_keras.evaluate import score_isbi
from unet_keras.postprocess import watershed_membranes
from unet_keras.report import format_scores, predict_and_score, predict_slices
from unet_keras.train import TrainConfig


def _identity_model():
    """A "network" that returns its input: fed the true membrane masks, it
    predicts them exactly, so every score is known."""
    inputs = keras.Input((None, None, 1))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


def test_predict_slices_keeps_shape_and_order(rng):
    config = TrainConfig(tta=True, depth=4)
    images = rng.random((3, 70, 45, 1)).astype("float32")  # smaller than a tile, not /16
    prob = predict_slices(_identity_model(), images, config)
    assert prob.shape == (3, 70, 45)  # the channel dropped
    np.testing.assert_allclose(prob, images[..., 0], atol=1e-6)


def test_predict_and_score_writes_predictions_and_perfect_scores(isbi_data, tmp_path):
    _, masks = load_isbi2012(isbi_data, split="train")
    held_out, test = masks[[27, 28]], masks[:30]  # (N, 512, 512, 1) float32, 1 = membrane
    config = TrainConfig(tta=False, overlays=True)
    recorded = {"val_slices": [27, 28], "device": "CPU"}
    metrics = predict_and_score(
        _identity_model(), config, tmp_path, (held_out, held_out), test, recorded
    )
    assert recorded == {"val_slices": [27, 28], "device": "CPU"}  # the caller's dict is kept

    assert metrics["val"]["v_rand"] == pytest.approx(1.0)
    assert metrics["val"]["v_info"] == pytest.approx(1.0)
    assert metrics["val"]["pixel_error"] == 0
    val = tifffile.imread(tmp_path / "predictions" / "val.tif")
    assert val.dtype == np.float32
    np.testing.assert_array_equal(val, held_out[..., 0])
    assert tifffile.imread(tmp_path / "predictions" / "test.tif").shape == (30, 512, 512)
    for name in ("test_ridges.tif", "test_watershed.tif"):
        assert (tmp_path / "predictions" / name).is_file(), name
    # The truth's bands thinned to lines on their crests score as the truth does.
    assert metrics["val_ridges"]["v_rand"] == pytest.approx(1.0)
    assert metrics["val_ridges"]["v_info"] == pytest.approx(1.0)
    ridges = tifffile.imread(tmp_path / "predictions" / "val_ridges.tif")
    assert ridges.sum() < 0.5 * val.sum()  # lines one pixel wide, not the bands
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == ["val_27.png", "val_28.png"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["val_slices"] == [27, 28] and saved["predict_seconds"] >= 0
    assert saved["val"]["v_rand"] == pytest.approx(metrics["val"]["v_rand"])
    assert saved["val_watershed"]["v_rand"] == pytest.approx(metrics["val_watershed"]["v_rand"])


def test_predict_and_score_fits_and_applies_the_learned_merging(misleading_isbi, tmp_path):
    """The identity "network" turns the misleading maps of slices 0-5 into its
    predictions of the training slices: false splits to learn from."""
    images, masks, maps = misleading_isbi
    held_out, test = maps[6:8, ..., None], maps[:4, ..., None]
    config = TrainConfig(tta=False, overlays=False)
    metrics = predict_and_score(
        _identity_model(), config, tmp_path, (held_out, masks[6:8]), test,
        {"val_slices": [6, 7]}, training=(maps[:6, ..., None], masks[:6]),
    )
    assert "learned_merging" not in metrics  # not skipped
    loaded = MergeClassifier.load(tmp_path / "merge_classifier.json")
    merged = tifffile.imread(tmp_path / "predictions" / "val_agglomerated.tif")
    val = tifffile.imread(tmp_path / "predictions" / "val.tif")
    np.testing.assert_array_equal(merged, agglomerate_membranes(val, held_out, loaded))
    test_merged = tifffile.imread(tmp_path / "predictions" / "test_agglomerated.tif")
    assert test_merged.shape == (4, 512, 512)
    scores = score_isbi(merged, masks[6:8])
    for key in ("v_rand", "v_info"):
        assert metrics["val_agglomerated"][key] == pytest.approx(scores[key])
    assert "val_agglomerated.tif" in format_scores({
        **metrics, "device": "CPU", "train_seconds": 1.0
    })
    config = TrainConfig(tta=False, overlays=False, learned_merging=False)
    (tmp_path / "off").mkdir()  # train makes the run folder
    metrics = predict_and_score(
        _identity_model(), config, tmp_path / "off", (held_out, masks[6:8]), test,
        {"val_slices": [6, 7]}, training=(maps[:6, ..., None], masks[:6]),
    )
    assert "val_agglomerated" not in metrics
    assert not (tmp_path / "off" / "merge_classifier.json").exists()


def test_ridges_off_keeps_the_map_under_the_watershed(misleading_isbi, tmp_path):
    _, masks, maps = misleading_isbi
    held_out = maps[6:8, ..., None]
    config = TrainConfig(tta=False, overlays=False, learned_merging=False, ridges=False)
    metrics = predict_and_score(
        _identity_model(), config, tmp_path, (held_out, masks[6:8]), maps[:2, ..., None],
        {"val_slices": [6, 7]},
    )
    assert "val_ridges" not in metrics
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == [
        "test.tif", "test_watershed.tif", "val.tif", "val_watershed.tif"
    ]
    val = tifffile.imread(tmp_path / "predictions" / "val.tif")
    closed = tifffile.imread(tmp_path / "predictions" / "val_watershed.tif")
    np.testing.assert_array_equal(closed, watershed_membranes(val, ridges=False))
    assert metrics["val_watershed"]["v_rand"] == pytest.approx(
        score_isbi(closed, masks[6:8])["v_rand"]
    )


def test_learned_merging_is_skipped_when_there_is_nothing_to_learn(misleading_isbi, tmp_path):
    """Maps that are the truth itself never split a cell: no pair to merge."""
    _, masks, _ = misleading_isbi
    metrics = predict_and_score(
        _identity_model(), TrainConfig(tta=False, overlays=False), tmp_path,
        (masks[6:8], masks[6:8]), masks[:2], {"val_slices": [6, 7]},
        training=(masks[:4], masks[:4]),
    )
    assert metrics["learned_merging"].startswith("skipped: The ")
    summary = format_scores({**metrics, "device": "CPU", "train_seconds": 1.0})
    assert summary.splitlines()[-1].startswith("learned merging skipped: The ")
    assert "val_agglomerated" not in metrics and metrics["val"]["v_rand"] == pytest.approx(1.0)
    assert not (tmp_path / "predictions" / "val_agglomerated.tif").exists()


def _scores(v_rand, v_info, per_slice=True):
    scores = {
        "v_rand": v_rand, "v_rand_threshold": 0.5, "v_info": v_info, "v_info_threshold": 0.6,
        "pixel_error": 0.07, "dice": 0.8, "iou": 0.7,
    }
    if per_slice:
        scores["v_rand_per_slice"] = [v_rand - 0.01, v_rand + 0.01]
        scores["v_info_per_slice"] = [v_info, v_info]
    return scores


def test_format_scores_reads_every_release_of_metrics_json():
    metrics = {
        "device": "CPU", "train_seconds": 300.0, "malis_seconds": 90.0, "val_slices": [28, 29],
        "val": _scores(0.98, 0.985), "val_watershed": _scores(0.981, 0.986),
    }  # as written before the ridges
    lines = format_scores(metrics).splitlines()
    assert lines[0] == "Trained 300 s on CPU, then fine-tuned against merges for 90 s."
    assert "V_rand 0.9800 (threshold 0.5), V_info 0.9850 (threshold 0.6)" in lines[1]
    assert lines[2] == "  per slice: 28: 0.9700 / 0.9850, 29: 0.9900 / 0.9850"
    assert "val_watershed.tif" in lines[3]
    metrics["val_agglomerated"] = _scores(0.985, 0.988)
    lines = format_scores(metrics).splitlines()
    assert "With the learned merging (val_agglomerated.tif)" in lines[5] and len(lines) == 7
    metrics["val_ridges"] = _scores(0.982, 0.987)
    lines = format_scores(metrics).splitlines()
    assert "On the ridges (val_ridges.tif)" in lines[3] and "V_info 0.9870" in lines[3]
    assert "pixel error 0.0700" in lines[1] and "pixel error" not in lines[3]  # lines, not maps
    assert "val_watershed.tif" in lines[5] and len(lines) == 9

    older = {  # before the fine-tuning, per-slice scores and the watershed were recorded
        "device": "CPU", "train_seconds": 300.0, "val_slices": [28, 29],
        "val": _scores(0.98, 0.985, per_slice=False),
    }
    lines = format_scores(older).splitlines()
    assert lines[0] == "Trained 300 s on CPU." and len(lines) == 2


def test_format_scores_says_why_the_learned_merging_was_skipped():
    """A run that asked for the learned merging but found nothing to fit it on
    (fast mode's tiny network) lists three scorings; one line says why not four."""
    metrics = {
        "device": "CPU", "train_seconds": 7.0, "val_slices": [28, 29],
        "val": _scores(0.14, 0.56), "val_watershed": _scores(0.14, 0.56),
        "learned_merging": "skipped: No two seeded regions touch in these maps.",
    }
    lines = format_scores(metrics).splitlines()
    assert lines[-1] == "learned merging skipped: No two seeded regions touch in these maps."
    assert sum("learned merging" in line.lower() for line in lines) == 1
    del metrics["learned_merging"]  # not asked for, or fitted: nothing to say
    assert "skipped" not in format_scores(metrics)
