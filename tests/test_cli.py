"""The command line: help, predict, evaluate, and clear errors for bad input."""

import dataclasses
import json
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
import tifffile

from unet_keras import build_unet
from unet_keras.cli import main, make_parser
from unet_keras.evaluate import score_isbi
from unet_keras.postprocess import ridge_membranes, watershed_membranes


def test_help_lists_every_command():
    result = subprocess.run(
        [sys.executable, "-m", "unet_keras", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("download", "train", "predict", "evaluate"):
        assert command in result.stdout


def test_train_options_mirror_the_config():
    args = make_parser().parse_args(
        ["train", "--filters", "8", "--no-tta", "--val-slices", "0", "1", "--learning-rate", "0.01",
         "--zoom-range", "-0.1", "0.2"]
    )
    assert (args.filters, args.tta, args.val_slices, args.learning_rate) == (8, False, [0, 1], 0.01)
    assert args.zoom_range == [-0.1, 0.2]


def test_train_presets(monkeypatch, capsys):
    import unet_keras.train
    from unet_keras.config import PRESETS, TrainConfig

    seen, offered, starts = [], [], []

    def fake_train(config, verbose, fallbacks=(), started_at=None):
        seen.append(config)
        offered.append(list(fallbacks))
        starts.append(started_at)

    monkeypatch.setattr(unet_keras.train, "train", fake_train)
    for preset in PRESETS:  # every preset is a choice of --preset
        assert main(["train", "--preset", preset, "--epochs", "3"]) == 0
    assert [(c.filters, c.epochs, c.mixed_precision) for c in seen] == [
        (16, 3, "auto"), (32, 3, "mixed_bfloat16"), (24, 3, "mixed_bfloat16"), (32, 3, "auto")
    ]
    assert offered == [[], [], [], []]  # a preset asked for by name is trained as it is ...
    assert capsys.readouterr().out == ""  # ... and not announced
    bfloat16_chain = ("cpu-bf16", "cpu-bf16-24", "cpu")
    monkeypatch.setattr(TrainConfig, "machine_presets", staticmethod(lambda: bfloat16_chain))
    assert main(["train", "--epochs", "3"]) == 0
    assert seen[-1] == TrainConfig.for_bfloat16_cpu(epochs=3)
    announced = capsys.readouterr().out
    assert "cpu-bf16 preset, picked for this machine (--preset cpu, cpu-bf16-24 or gpu" in announced
    # With a budget (make train's), the smaller preset is there to fall back on.
    assert main(["train", "--epochs", "3", "--time-budget-minutes", "17"]) == 0
    assert seen[-1] == TrainConfig.for_bfloat16_cpu(epochs=3, time_budget_minutes=17)
    assert offered[-1] == [
        TrainConfig.for_slower_bfloat16_cpu(epochs=3, time_budget_minutes=17),
        TrainConfig(epochs=3, time_budget_minutes=17),
    ]
    announced = capsys.readouterr().out
    assert "machine; the cpu-bf16-24 or cpu preset if it does not fit the time budget" in announced
    # make train's start, so that the budget counts its set-up.
    assert starts[-1] is None
    assert main(["train", "--time-budget-minutes", "20", "--started-at", "1796600000"]) == 0
    assert starts[-1] == 1796600000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_unet(filters=2, depth=2, dropout=0).save(path)
    return path


def _write_pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i}.png"), image)
    return folder


def test_predict_then_evaluate(tmp_path, tiny_model, capsys):
    rng = np.random.default_rng(0)
    images = _write_pngs(tmp_path / "images", rng.integers(0, 256, (3, 70, 90), dtype=np.uint8))
    out = tmp_path / "pred.tif"
    assert main(["predict", "--model", str(tiny_model), "--input", str(images),
                 "--output", str(out), "--no-tta", "--overlays", str(tmp_path / "ov")]) == 0
    membrane = tifffile.imread(out)
    assert membrane.shape == (3, 70, 90) and membrane.dtype == np.float32
    assert len(list((tmp_path / "ov").glob("*.png"))) == 3
    one = sorted(images.glob("*.png"))[1]
    assert main(["predict", "--model", str(tiny_model), "--input", str(one),
                 "--output", str(tmp_path / "one.tif"), "--no-tta"]) == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "one.tif"), membrane[1:2], atol=1e-6)

    submission = tmp_path / "submission.tif"
    assert main(["predict", "--model", str(tiny_model), "--input", str(images),
                 "--output", str(submission), "--no-tta", "--isbi-submission"]) == 0
    np.testing.assert_allclose(tifffile.imread(submission), 1 - membrane, atol=1e-6)

    labels = np.where(rng.random((3, 70, 90)) > 0.3, 255, 0).astype(np.uint8)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    capsys.readouterr()
    assert main(["evaluate", "--prediction", str(submission), "--isbi-submission",
                 "--labels", str(tmp_path / "labels.tif")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0 <= scores["v_rand"] <= 1 and 0 <= scores["pixel_error"] <= 1
    assert len(scores["v_rand_per_slice"]) == 3  # the curves are left out, these kept
    assert np.mean(scores["v_rand_per_slice"]) == pytest.approx(scores["v_rand"], abs=1e-9)
    assert "v_rand_curve" not in scores


def test_watershed_option_of_predict_and_evaluate(tmp_path, tiny_model, capsys, gap_and_specks):
    images = _write_pngs(tmp_path / "images", np.zeros((2, 48, 40), np.uint8))
    raw, closed = tmp_path / "raw.tif", tmp_path / "closed.tif"
    for out, extra in ((raw, []), (closed, ["--watershed"])):
        assert main(["predict", "--model", str(tiny_model), "--input", str(images),
                     "--output", str(out), "--no-tta", *extra]) == 0
    expected = watershed_membranes(tifffile.imread(raw))
    np.testing.assert_array_equal(tifffile.imread(closed), expected)

    # A faint gap in a membrane and specks inside the cells: no threshold is
    # right, the watershed is (see tests/test_postprocess.py).
    prob, mask = gap_and_specks
    scores = _evaluated_v_info(tmp_path, capsys, np.stack([prob, prob]), np.stack([mask] * 2),
                               [[], ["--watershed"]])
    assert scores[0] < 1.0 and scores[1] == pytest.approx(1.0)


def _evaluated_v_info(tmp_path, capsys, prob, mask, option_lists):
    """V_info that `evaluate` prints for maps `prob` against membrane masks
    `mask`, both (N, H, W), once with each list of extra options."""
    tifffile.imwrite(tmp_path / "prob.tif", prob)
    tifffile.imwrite(tmp_path / "labels.tif", (255 - 255 * mask).astype(np.uint8))
    scores = []
    for extra in option_lists:
        capsys.readouterr()
        assert main(["evaluate", "--prediction", str(tmp_path / "prob.tif"),
                     "--labels", str(tmp_path / "labels.tif"), *extra]) == 0
        scores.append(json.loads(capsys.readouterr().out)["v_info"])
    return scores


def test_ridges_option_of_predict_and_evaluate(tmp_path, tiny_model, capsys,
                                                 lopsided_membrane):
    """--ridges redraws the plain map's boundaries on their crests; the
    watershed's lines are drawn over the ridges unless --no-ridges."""
    images = _write_pngs(tmp_path / "images", np.zeros((2, 48, 40), np.uint8))
    outputs = {name: tmp_path / f"{name}.tif" for name in ("raw", "ridges", "flat_closed")}
    extras = {"raw": [], "ridges": ["--ridges"], "flat_closed": ["--watershed", "--no-ridges"]}
    for name, out in outputs.items():
        assert main(["predict", "--model", str(tiny_model), "--input", str(images),
                     "--output", str(out), "--no-tta", *extras[name]]) == 0
    raw = tifffile.imread(outputs["raw"])
    np.testing.assert_array_equal(tifffile.imread(outputs["ridges"]), ridge_membranes(raw))
    np.testing.assert_array_equal(
        tifffile.imread(outputs["flat_closed"]), watershed_membranes(raw, ridges=False)
    )

    # Two cells, the map's band lopsided into the right one (tests/test_postprocess.py).
    prob, mask = lopsided_membrane
    scores = _evaluated_v_info(tmp_path, capsys, prob[None], mask[None], [[], ["--ridges"]])
    assert scores[0] < 0.99 and scores[1] == pytest.approx(1.0)


def test_watershed_parameters_reach_the_watershed(tmp_path, capsys, gap_and_specks):
    """The parameters change the result as the Python call does; without
    --watershed they are refused instead of silently ignored."""
    prob, mask = gap_and_specks
    tifffile.imwrite(tmp_path / "gap.tif", prob[None])
    tifffile.imwrite(tmp_path / "labels.tif", (255 - 255 * mask)[None].astype(np.uint8))
    evaluate = ["evaluate", "--prediction", str(tmp_path / "gap.tif"),
                "--labels", str(tmp_path / "labels.tif")]
    # Unmerged and keeping every seed, each speck is a cell of its own.
    options = ["--merge-threshold", "0", "--min-marker-size", "0", "--marker-threshold", "0.05"]
    capsys.readouterr()
    assert main([*evaluate, "--watershed", *options]) == 0
    v_info = json.loads(capsys.readouterr().out)["v_info"]
    expected = score_isbi(
        watershed_membranes(prob, marker_threshold=0.05, min_marker_size=0, merge_threshold=0),
        mask,
    )
    assert v_info == pytest.approx(expected["v_info"]) and v_info < 0.99

    assert main([*evaluate, "--merge-threshold", "0"]) == 2
    assert "--merge-threshold given without --watershed" in capsys.readouterr().err
    assert main([*evaluate, "--watershed", "--marker-threshold", "1.5"]) == 2
    assert "marker_threshold" in capsys.readouterr().err
    # predict checks them before loading the model, not after a long prediction
    assert main(["predict", "--model", str(tmp_path / "missing.keras"), "--input", ".",
                 "--output", str(tmp_path / "p.tif"), "--watershed",
                 "--min-marker-size", "-1"]) == 2
    assert "min_marker_size" in capsys.readouterr().err


def test_bad_input_gives_a_clear_error(tmp_path, tiny_model, capsys):
    missing = tmp_path / "nowhere"
    assert main(["predict", "--model", str(tiny_model), "--input", str(missing),
                 "--output", str(tmp_path / "p.tif")]) == 2
    assert "does not exist" in capsys.readouterr().err

    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 2] = 255
    _write_pngs(tmp_path / "rgb", [rgb])
    assert main(["predict", "--model", str(tiny_model), "--input", str(tmp_path / "rgb"),
                 "--output", str(tmp_path / "p.tif")]) == 2
    assert "colour (RGB)" in capsys.readouterr().err

    tifffile.imwrite(tmp_path / "pred.tif", np.zeros((1, 8, 8), np.float32))
    tifffile.imwrite(tmp_path / "labels.tif", np.full((1, 8, 8), 128, np.uint8))
    assert main(["evaluate", "--prediction", str(tmp_path / "pred.tif"),
                 "--labels", str(tmp_path / "labels.tif")]) == 2
    assert "found the values 128" in capsys.readouterr().err


def test_evaluate_lists_the_costliest_errors(tmp_path, capsys, gap_and_specks):
    """A membrane with a hole merges the two cells at every threshold: that
    merge is the slice's costliest error, and repairing it gives the score
    that only the specks cost."""
    prob, mask = gap_and_specks
    prob = prob.copy()
    prob[28:36, 31:33] = 0.02  # the faint gap becomes a hole
    tifffile.imwrite(tmp_path / "hole.tif", np.stack([prob, np.where(mask, 0.95, 0.02)]))
    tifffile.imwrite(tmp_path / "labels.tif", np.stack([255 - 255 * mask] * 2).astype(np.uint8))
    evaluate = ["evaluate", "--prediction", str(tmp_path / "hole.tif"),
                "--labels", str(tmp_path / "labels.tif")]
    capsys.readouterr()
    assert main([*evaluate, "--errors", "2"]) == 0
    scores = json.loads(capsys.readouterr().out)
    errors = scores["costliest_errors"]
    assert [e["slice"] for e in errors] == [0]  # the second slice is right
    (merge,) = errors
    assert merge["kind"] == "merge" and merge["pieces"] == [31 * 64, 31 * 64]
    assert merge["v_rand_if_repaired"] > scores["v_rand_per_slice"][0] + 0.3
    assert abs(merge["centroid"][1] - 31.5) < 2  # between the two cells

    # Scored against slices 1 and 0 of the labels, the errors name the labels' slice.
    assert main([*evaluate, "--errors", "2", "--label-slices", "1", "0"]) == 0
    assert [e["slice"] for e in json.loads(capsys.readouterr().out)["costliest_errors"]] == [1]

    assert main(evaluate) == 0
    assert "costliest_errors" not in json.loads(capsys.readouterr().out)
    assert main([*evaluate, "--errors", "0"]) == 2
    assert "--errors must be at least 1" in capsys.readouterr().err


def test_evaluate_scores_the_named_slices_of_the_labels(tmp_path, capsys, gap_and_specks):
    """A run's val.tif holds only its held-out slices: --label-slices picks
    them out of the whole labelled stack, and without it the error says so."""
    prob, mask = gap_and_specks
    right = np.where(mask, 0.95, 0.02).astype(np.float32)
    labels = np.stack([np.zeros_like(mask), mask, np.zeros_like(mask), mask.T])
    tifffile.imwrite(tmp_path / "labels.tif", (255 - 255 * labels).astype(np.uint8))
    tifffile.imwrite(tmp_path / "pred.tif", np.stack([prob, right.T]))
    evaluate = ["evaluate", "--prediction", str(tmp_path / "pred.tif"),
                "--labels", str(tmp_path / "labels.tif")]
    capsys.readouterr()
    assert main([*evaluate, "--label-slices", "1", "3"]) == 0
    scores = json.loads(capsys.readouterr().out)
    expected = score_isbi(np.stack([prob, right.T]), np.stack([mask, mask.T]))
    assert scores["v_rand_per_slice"] == pytest.approx(expected["v_rand_per_slice"])
    assert scores["v_rand_per_slice"][1] == pytest.approx(1.0)  # the transposed slice matched

    assert main(evaluate) == 2
    error = capsys.readouterr().err
    assert "The prediction has 2 slices and the labels 4" in error and "--label-slices" in error
    assert main([*evaluate, "--label-slices", "1", "4"]) == 2
    assert "the labels have slices 0 to 3 only" in capsys.readouterr().err
    assert main([*evaluate, "--label-slices", "1"]) == 2
    assert "names 1 slices but the prediction has 2" in capsys.readouterr().err


def test_evaluate_positive_label_reads_masks_that_mark_their_foreground_white(tmp_path, capsys):
    """Masks with foreground 255 (15% of the pixels): the default reads them
    the ISBI way, inverted, and warns; --positive-label 255 scores them right."""
    rng = np.random.default_rng(0)
    foreground = rng.random((2, 32, 32)) < 0.15
    prob = np.where(foreground, 0.9, 0.1).astype(np.float32)
    prob[0, :4] = 0.9  # a few false positives
    tifffile.imwrite(tmp_path / "pred.tif", prob)
    tifffile.imwrite(tmp_path / "masks.tif", (255 * foreground).astype(np.uint8))
    evaluate = ["evaluate", "--prediction", str(tmp_path / "pred.tif"),
                "--labels", str(tmp_path / "masks.tif")]
    capsys.readouterr()
    assert main([*evaluate, "--positive-label", "255"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["dice"] == pytest.approx(score_isbi(prob, foreground)["dice"])
    assert captured.err == ""
    assert main(evaluate) == 0  # the default: 0 = the predicted class, as ISBI's labels
    captured = capsys.readouterr()
    assert json.loads(captured.out)["dice"] == pytest.approx(score_isbi(prob, ~foreground)["dice"])
    (warning,) = captured.err.splitlines()
    share = f"{np.mean(~foreground):.0%}"
    assert warning.startswith(f"warning: {share} of the labels' pixels are 0")
    assert "--positive-label 255" in warning
    assert main([*evaluate, "--positive-label", "0"]) == 0  # chosen: no warning
    assert capsys.readouterr().err == ""
    # ISBI-like labels (0 = membrane, a minority) pass without a warning.
    tifffile.imwrite(tmp_path / "isbi.tif", (255 * ~foreground).astype(np.uint8))
    assert main(["evaluate", "--prediction", str(tmp_path / "pred.tif"),
                 "--labels", str(tmp_path / "isbi.tif")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["dice"] == pytest.approx(score_isbi(prob, foreground)["dice"])
    assert captured.err == ""
    with pytest.raises(SystemExit):
        make_parser().parse_args([*evaluate, "--positive-label", "1"])


def test_evaluate_positive_label_agrees_with_isbi_submission(tmp_path, capsys):
    """--isbi-submission flips the prediction back whichever class is positive."""
    foreground = np.zeros((1, 32, 32), bool)
    foreground[:, :, 14:18] = True
    prob = np.where(foreground, 0.8, 0.1).astype(np.float32)
    tifffile.imwrite(tmp_path / "pred.tif", prob)
    tifffile.imwrite(tmp_path / "submission.tif", 1 - prob)
    tifffile.imwrite(tmp_path / "masks.tif", (255 * foreground).astype(np.uint8))
    scores = []
    for prediction, extra in (("pred.tif", []), ("submission.tif", ["--isbi-submission"])):
        capsys.readouterr()
        assert main(["evaluate", "--prediction", str(tmp_path / prediction), "--labels",
                     str(tmp_path / "masks.tif"), "--positive-label", "255", *extra]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    for key in ("dice", "v_rand", "v_info", "pixel_error"):
        assert scores[0][key] == pytest.approx(scores[1][key])
    assert scores[0]["dice"] == pytest.approx(1.0)


def _save(model, folder, name):
    path = folder / name
    model.save(path)
    return path


@pytest.fixture(scope="module")
def other_models(tmp_path_factory):
    """Tiny models: a 2-class softmax, a 3-class one and one of 3 input channels."""
    folder = tmp_path_factory.mktemp("models")
    small = {"filters": 2, "depth": 2, "dropout": 0}
    return {
        "two_classes": _save(build_unet(num_classes=2, **small), folder, "two.keras"),
        "three_classes": _save(build_unet(num_classes=3, **small), folder, "three.keras"),
        "rgb": _save(build_unet((None, None, 3), **small), folder, "rgb.keras"),
    }


def test_predict_writes_class_1_of_a_two_class_softmax(tmp_path, other_models, capsys):
    from unet_keras.inference import predict_tiled

    images = np.random.default_rng(0).integers(0, 256, (2, 40, 48), dtype=np.uint8)
    folder = _write_pngs(tmp_path / "images", images)
    capsys.readouterr()
    assert main(["predict", "--model", str(other_models["two_classes"]), "--input", str(folder),
                 "--output", str(tmp_path / "p.tif"), "--no-tta"]) == 0
    assert "membrane probabilities, from class 1 of the model's 2" in capsys.readouterr().out
    model = keras.models.load_model(other_models["two_classes"])
    expected = predict_tiled(model, (images / 255.0).astype("float32")[..., None])[..., 1]
    np.testing.assert_allclose(tifffile.imread(tmp_path / "p.tif"), expected, atol=1e-5)


@pytest.mark.usefixtures("no_prediction")
def test_predict_refuses_more_than_two_classes(tmp_path, other_models, capsys):
    folder = _write_pngs(tmp_path / "images", np.zeros((1, 40, 48), np.uint8))
    model = other_models["three_classes"]
    assert main(["predict", "--model", str(model), "--input", str(folder),
                 "--output", str(tmp_path / "p.tif")]) == 2
    line = _error_line(capsys)
    assert f"--model {model} has 3 output channels" in line and "predict_tiled" in line
    assert not (tmp_path / "p.tif").exists()


def test_predict_reads_colour_images_as_rgb_for_a_colour_model(tmp_path, other_models):
    from unet_keras.inference import predict_tiled

    rgb = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(rgb):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert main(["predict", "--model", str(other_models["rgb"]), "--input", str(folder),
                 "--output", str(tmp_path / "p.tif"), "--no-tta",
                 "--overlays", str(tmp_path / "ov")]) == 0
    model = keras.models.load_model(other_models["rgb"])
    expected = predict_tiled(model, (rgb / 255.0).astype("float32"))[..., 0]
    np.testing.assert_allclose(tifffile.imread(tmp_path / "p.tif"), expected, atol=1e-5)
    assert len(list((tmp_path / "ov").glob("*.png"))) == 2


def test_predict_names_the_overlays_after_the_input_files(tmp_path, tiny_model):
    images = np.zeros((2, 40, 48), np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, image in zip(("cell_b.png", "cell_a.png"), images):
        cv2.imwrite(str(folder / name), image)
    predict = ["predict", "--model", str(tiny_model), "--output", str(tmp_path / "p.tif"),
               "--no-tta"]
    assert main([*predict, "--input", str(folder), "--overlays", str(tmp_path / "ov")]) == 0
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == ["cell_a.png", "cell_b.png"]
    assert main([*predict, "--input", str(folder / "cell_b.png"),
                 "--overlays", str(tmp_path / "one")]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["cell_b.png"]
    tifffile.imwrite(tmp_path / "stack.tif", images)  # a stack: its slices are numbered
    assert main([*predict, "--input", str(tmp_path / "stack.tif"),
                 "--overlays", str(tmp_path / "stack")]) == 0
    assert sorted(p.name for p in (tmp_path / "stack").iterdir()) == ["00.png", "01.png"]


def test_an_unreachable_data_server_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """`make train` on a machine that cannot reach the data: one line saying
    what failed and how to use a mirror, not a traceback."""
    import socket

    with socket.socket() as probe:  # a port that nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    assert main(["download", "--dest", str(tmp_path / "data"), "--base-url", url]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    last = error.splitlines()[-1]  # below the progress bar
    assert last.startswith(f"error: Could not download {url}") and "UNET_KERAS_DATA_URL" in last

    monkeypatch.setenv("UNET_KERAS_DATA_URL", url)
    assert main(["train", "--preset", "cpu", "--runs-dir", str(tmp_path / "runs"),
                 "--data-dir", str(tmp_path / "data")]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: Could not download {url}")


def test_ctrl_c_in_train_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import unet_keras.train

    def interrupted(config, verbose, fallbacks=(), started_at=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(unet_keras.train, "train", interrupted)
    try:
        code = main(["train", "--preset", "cpu", "--name", "mine", "--runs-dir", str(tmp_path)])
    except KeyboardInterrupt:  # caught here, or it would stop the whole test session
        pytest.fail("the Ctrl-C escaped main() as a traceback")
    assert code == 130
    error = capsys.readouterr().err
    assert f"{tmp_path / 'mine'} keeps the finished epochs" in error
    assert "run the same command again to resume" in error


def test_merge_classifier_option_of_predict(tmp_path, misleading_isbi, capsys):
    """An identity "network" predicts its input: the misleading maps, written as PNGs."""
    import keras

    from unet_keras.agglomeration import MergeClassifier, agglomerate_membranes

    _, masks, maps = misleading_isbi
    inputs = keras.Input((None, None, 1))
    model = tmp_path / "identity.keras"
    keras.Model(inputs, keras.layers.Identity()(inputs)).save(model)
    images = _write_pngs(tmp_path / "images", np.round(maps[6:8] * 255).astype(np.uint8))
    seen = np.round(maps * 255) / 255  # what the network sees, and so predicts
    classifier = MergeClassifier.fit(seen[:6], seen[:6], masks[:6])
    classifier.save(tmp_path / "merge.json")
    predict = ["predict", "--model", str(model), "--input", str(images), "--no-tta"]
    raw, merged = tmp_path / "raw.tif", tmp_path / "merged.tif"
    assert main([*predict, "--output", str(raw)]) == 0
    assert main([*predict, "--output", str(merged), "--merge-classifier",
                 str(tmp_path / "merge.json")]) == 0
    expected = agglomerate_membranes(tifffile.imread(raw), seen[6:8], classifier)
    np.testing.assert_array_equal(tifffile.imread(merged), expected)
    assert (tifffile.imread(merged) == 1.0).sum() > (tifffile.imread(raw) == 1.0).sum()
    assert main([*predict, "--output", str(merged), "--merge-classifier",
                 str(tmp_path / "merge.json"), "--no-ridges"]) == 0
    expected = agglomerate_membranes(tifffile.imread(raw), seen[6:8], classifier, ridges=False)
    np.testing.assert_array_equal(tifffile.imread(merged), expected)

    capsys.readouterr()
    assert main([*predict, "--output", str(merged), "--watershed", "--merge-classifier",
                 str(tmp_path / "merge.json")]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main([*predict, "--output", str(merged), "--merge-classifier",
                 str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def _subparser(name):
    parser = make_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    return commands.choices[name]


def test_train_help_names_each_choice_and_default():
    from unet_keras.config import LOSSES, TrainConfig

    train = _subparser("train")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    options = {action.dest: action for action in train._actions}
    assert fields <= set(options)
    for name in fields - {"data_url"}:  # data_url's default is a variable or the source
        assert "(default " in options[name].help, name
    assert "(default: $UNET_KERAS_DATA_URL" in options["data_url"].help
    assert tuple(options["loss"].choices) == LOSSES
    for name in ("architecture", "optimizer", "schedule", "mixed_precision", "jit_compile",
                 "padding", "upsampling"):
        assert options[name].choices, name
    assert "(default 16; --preset cpu-bf16 32, cpu-bf16-24 24, gpu 32)" in options["filters"].help
    assert "(default 25 26 27 28 29)" in options["val_slices"].help
    assert "(default on)" in options["tta"].help
    assert "train's own messages too" in options["verbose"].help
    help_text = train.format_help()
    assert "{bce,dice,bce_dice,bce_cldice,weighted_ce}" in help_text
    with pytest.raises(SystemExit):
        make_parser().parse_args(["train", "--loss", "focal"])
    assert "(default data/isbi2012)" in _subparser("download").format_help()


def test_the_ridges_help_names_the_options_of_its_command():
    ridges = {name: next(a for a in _subparser(name)._actions if a.dest == "ridges").help
              for name in ("predict", "evaluate")}
    assert "--watershed and --merge-classifier" in ridges["predict"]
    assert "under the lines of --watershed;" in ridges["evaluate"]


def _error_line(capsys):
    error = capsys.readouterr().err
    assert "Traceback" not in error
    last = error.splitlines()[-1]
    assert last.startswith("error: ")
    return last


def test_train_config_file_errors_name_the_file(tmp_path, monkeypatch, capsys):
    import unet_keras.train
    from unet_keras.config import TrainConfig

    seen = []
    monkeypatch.setattr(unet_keras.train, "train",
                        lambda config, verbose, fallbacks=(), started_at=None: seen.append(config))
    saved = tmp_path / "config.json"
    saved.write_text(TrainConfig(filters=8, epochs=3).to_json())
    assert main(["train", "--config", str(saved), "--epochs", "2"]) == 0
    assert seen == [TrainConfig(filters=8, epochs=2)]  # the file, with the options over it

    files = {"bogus.json": ('{"bogus": 1}', "does not know: bogus"),
             "list.json": ("[1, 2]", "is a JSON object, got list"),
             "bad.json": ("not json", "is not valid JSON"),
             "zero.json": ('{"filters": 0}', "`filters` must be an integer >= 1")}
    for name, (text, message) in files.items():
        (tmp_path / name).write_text(text)
        assert main(["train", "--config", str(tmp_path / name)]) == 2
        line = _error_line(capsys)
        assert str(tmp_path / name) in line and message in line, line
    assert main(["train", "--config", str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder" in _error_line(capsys)
    assert len(seen) == 1


def test_download_into_a_file_is_a_clear_error(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["download", "--dest", str(a_file)]) == 2
    assert f"--dest {a_file} is a file: give a folder" in _error_line(capsys)
    assert main(["download", "--dest", str(a_file / "data")]) == 2
    assert "which is a file, not a folder" in _error_line(capsys)


def test_system_errors_are_one_line(monkeypatch, capsys):
    import unet_keras.datasets

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/data/isbi2012/train")

    monkeypatch.setattr(unet_keras.datasets, "download_isbi2012", denied)
    assert main(["download"]) == 2
    assert _error_line(capsys) == "error: /data/isbi2012/train: Permission denied"


@pytest.fixture
def no_prediction(monkeypatch):
    """Fails a test that predicts: its outputs must be refused before that."""
    import unet_keras.inference

    def predict(*args, **kwargs):
        raise AssertionError("predicted before the outputs were checked")

    monkeypatch.setattr(unet_keras.inference, "predict_tiled", predict)


@pytest.mark.usefixtures("no_prediction")
def test_predict_checks_its_outputs_and_model_before_predicting(tmp_path, tiny_model, capsys):
    images = _write_pngs(tmp_path / "images", np.zeros((1, 48, 40), np.uint8))
    predict = ["predict", "--model", str(tiny_model), "--input", str(images), "--no-tta"]
    folder = tmp_path / "out"
    folder.mkdir()
    assert main([*predict, "--output", str(folder)]) == 2
    assert f"--output {folder} is a folder: give a file, e.g." in _error_line(capsys)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main([*predict, "--output", str(tmp_path / "p.tif"), "--overlays", str(a_file)]) == 2
    assert f"--overlays {a_file} is a file: give a folder" in _error_line(capsys)
    assert not (tmp_path / "p.tif").exists()

    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK not a zip archive")
    for model in (corrupt, a_file):
        predict[2] = str(model)
        assert main([*predict, "--output", str(tmp_path / "p.tif")]) == 2
        line = _error_line(capsys)
        assert f"--model {model} is not a .keras model (corrupt, or another format)" in line
        assert "File not found" not in line
    predict[2] = str(tmp_path / "missing.keras")
    assert main([*predict, "--output", str(tmp_path / "p.tif")]) == 2
    assert "missing.keras does not exist: give a .keras model" in _error_line(capsys)


def test_evaluate_checks_the_labels_before_the_watershed(tmp_path, monkeypatch, capsys):
    import unet_keras.cli

    def watershed(*args, **kwargs):
        raise AssertionError("the watershed ran before the labels were checked")

    monkeypatch.setattr(unet_keras.cli, "watershed_membranes", watershed)
    tifffile.imwrite(tmp_path / "pred.tif", np.zeros((3, 16, 16), np.float32))
    tifffile.imwrite(tmp_path / "labels.tif", np.full((2, 16, 16), 255, np.uint8))
    assert main(["evaluate", "--prediction", str(tmp_path / "pred.tif"),
                 "--labels", str(tmp_path / "labels.tif"), "--watershed"]) == 2
    assert "The prediction has 3 slices and the labels 2" in _error_line(capsys)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow setting")
def test_train_with_weights_assumed_frozen_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "1")
    assert main(["train", "--preset", "cpu", "--runs-dir", str(tmp_path)]) == 2
    assert _error_line(capsys).startswith("error: TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 is set")
    assert not any(tmp_path.iterdir())
