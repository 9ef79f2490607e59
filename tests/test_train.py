"""A short real training run on the ISBI 2012 mirror writes the whole run
folder, and an interrupted run resumes from its backup."""

import dataclasses
import json
import time

import keras
import numpy as np
import pytest
import tifffile

from unet_keras.backend_utils import DeviceInfo
from unet_keras.datasets import load_isbi2012
from unet_keras.plots import read_history
from unet_keras.tensorflow_env import FrozenWeightsError
from unet_keras.train import TrainConfig, build_model, format_scores, train

pytestmark = pytest.mark.slow


def tiny_config(tmp_path, data_dir, **overrides):
    values = dict(
        name="tiny", runs_dir=str(tmp_path / "runs"), data_dir=str(data_dir),
        filters=4, depth=2, tile_size=64, batch_size=2, epochs=2, steps_per_epoch=3,
        val_slices=(28, 29), tta=False, learning_rate=1e-3, malis_steps=2,
        # Seconds a run that only test_short_run_writes_every_file needs to spend.
        ridges=False, learned_merging=False,
    )
    return TrainConfig(**{**values, **overrides})


class Interrupt(KeyboardInterrupt):
    """What a Ctrl-C raises, and not an `Exception` that an `except Exception` could swallow."""


class InterruptAt(keras.callbacks.Callback):
    """Stops training like a Ctrl-C in the middle of an epoch."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at = (epoch, step)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise Interrupt


class EpochRecorder(keras.callbacks.Callback):
    """The epochs `fit` starts, and the batches that any training loop ends."""

    def __init__(self):
        super().__init__()
        self.epochs, self.batches = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(batch)


def test_short_run_writes_every_file(tmp_path, isbi_data, capsys):
    """... and, started again (`make train` twice), trains nothing and returns its
    scores; another configuration in its folder is refused."""
    config = tiny_config(tmp_path, isbi_data, ridges=True, learned_merging=True)
    metrics = train(config, verbose=0)
    run = config.run_dir
    for name in ("config.json", "history.csv", "model.keras", "model_fit.keras", "curves.png",
                 "metrics.json"):
        assert (run / name).is_file(), name
    for leftover in ("backup", "malis", "progress.json"):  # the run is complete
        assert not (run / leftover).exists(), leftover
    assert metrics["malis_seconds"] > 0
    assert TrainConfig.from_json((run / "config.json").read_text()) == config
    val = tifffile.imread(run / "predictions" / "val.tif")
    test = tifffile.imread(run / "predictions" / "test.tif")
    assert val.shape == (2, 512, 512) and val.dtype == np.float32
    assert test.shape == (30, 512, 512) and test.dtype == np.float32
    assert 0 <= val.min() and val.max() <= 1
    ridges = tifffile.imread(run / "predictions" / "val_ridges.tif")
    assert ridges.dtype == np.float32 and ridges.shape == val.shape
    assert (ridges <= val).all()  # crests kept, each basin at its lowest
    assert tifffile.imread(run / "predictions" / "test_ridges.tif").shape == test.shape
    closed = tifffile.imread(run / "predictions" / "val_watershed.tif")
    assert closed.dtype == np.float32 and closed.shape == val.shape
    assert (closed >= ridges).all()  # the ridge map with boundary lines added
    assert tifffile.imread(run / "predictions" / "test_watershed.tif").shape == test.shape
    assert sorted(p.name for p in (run / "overlays").iterdir()) == ["val_28.png", "val_29.png"]
    saved = json.loads((run / "metrics.json").read_text())
    # The learned merging was fitted on the 28 training slices' maps, or, where the tiny
    # network's maps split no cell, skipped with the reason recorded.
    if "learned_merging" in saved:
        assert saved["learned_merging"].startswith("skipped: ")
        assert not (run / "merge_classifier.json").exists()
    else:
        assert (run / "merge_classifier.json").is_file()
        merged = tifffile.imread(run / "predictions" / "val_agglomerated.tif")
        assert merged.shape == val.shape and (merged >= ridges).all()
        assert tifffile.imread(run / "predictions" / "test_agglomerated.tif").shape == test.shape
        assert 0 <= saved["val_agglomerated"]["v_rand"] <= 1
    assert saved["val_slices"] == [28, 29] and len(saved["train_slices"]) == 28
    for key in ("v_rand", "v_info", "pixel_error", "dice", "iou"):
        assert 0 <= saved["val"][key] <= 1
        assert saved["val"][key] == pytest.approx(metrics["val"][key])
        assert 0 <= saved["val_ridges"][key] <= 1
        assert 0 <= saved["val_watershed"][key] <= 1
    for key in ("val", "val_ridges", "val_watershed"):
        scores = saved[key]
        assert len(scores["v_rand_per_slice"]) == len(scores["v_info_per_slice"]) == 2
        assert np.mean(scores["v_rand_per_slice"]) == pytest.approx(scores["v_rand"])
    assert len(read_history(run / "history.csv")["loss"]) == 2

    summary = format_scores(saved).splitlines()
    rand, info = saved["val"]["v_rand_per_slice"][1], saved["val"]["v_info_per_slice"][1]
    assert f"29: {rand:.4f} / {info:.4f}" in summary[2]  # the line below the held-out scores
    # device; scores and per slice: the map, on the ridges, with the watershed; then the
    # learned merging's, or why it was skipped
    if "learned_merging" in saved:
        assert len(summary) == 8 and summary[-1].startswith("learned merging skipped: ")
    else:
        assert len(summary) == 9
    assert "fine-tuned against merges" in summary[0]
    assert "val_ridges.tif" in summary[3]  # the user learns where each map is
    assert "val_watershed.tif" in summary[5]

    model = (run / "model.keras").read_bytes()
    recorder = EpochRecorder()
    again = train(config, extra_callbacks=[recorder], verbose=1)
    assert recorder.epochs == recorder.batches == []
    assert again == saved and (run / "model.keras").read_bytes() == model
    said = capsys.readouterr().out
    assert "holds a finished run of this configuration, so nothing is trained" in said
    assert format_scores(saved) in said
    with pytest.raises(ValueError, match="another configuration \\(filters 4 there, 8 asked\\)"):
        train(dataclasses.replace(config, filters=8), verbose=0)
    assert (run / "model.keras").read_bytes() == model

    scored = [key for key in ("val", "val_ridges", "val_watershed", "val_agglomerated")
              if key in saved]
    for key in scored:  # a metrics.json written before per-slice scores
        del saved[key]["v_rand_per_slice"], saved[key]["v_info_per_slice"]
    skipped = "learned_merging" in saved  # one line more: why
    assert len(format_scores(saved).splitlines()) == 1 + len(scored) + skipped


@pytest.mark.parametrize(
    "options", [{}, {"ema": 0.9, "loss": "bce_cldice"}, {"architecture": "unet++"}]
)
@pytest.mark.usefixtures("functions_run_eagerly")
def test_interrupted_run_resumes_from_the_backup(tmp_path, isbi_data, options):
    config = tiny_config(tmp_path, isbi_data, epochs=3, overlays=False, **options)
    with pytest.raises(Interrupt):
        train(config, extra_callbacks=[InterruptAt(epoch=2, step=1)], verbose=0)
    assert (config.run_dir / "backup").is_dir()
    assert len(read_history(config.run_dir / "history.csv")["loss"]) == 2

    recorder = EpochRecorder()
    train(config, extra_callbacks=[recorder], verbose=0)
    assert recorder.epochs == [2]  # epochs 0 and 1 were not trained again
    history = read_history(config.run_dir / "history.csv")
    assert history["epoch"] == [0, 1, 2]
    assert not (config.run_dir / "backup").exists()


@pytest.mark.usefixtures("functions_run_eagerly")
def test_train_says_how_to_train_faster_on_this_machine(
    tmp_path, isbi_data, monkeypatch, capsys
):
    import unet_keras.backend_utils
    import unet_keras.train

    # PyTorch on the CPU of a machine with an NVIDIA GPU: both hints apply.
    monkeypatch.setattr(unet_keras.backend_utils, "nvidia_gpu_present", lambda: True)
    monkeypatch.setattr(
        unet_keras.train, "detect_device", lambda: DeviceInfo("torch", "CPU", "host", False)
    )
    config = tiny_config(tmp_path, isbi_data, overlays=False)
    with pytest.raises(Interrupt):
        train(config, extra_callbacks=[InterruptAt(epoch=0, step=0)], verbose=1)
    said = capsys.readouterr().out
    assert "Training on CPU (host)" in said
    assert "has an NVIDIA GPU, but Keras's torch backend does not see it" in said
    assert "Keras's torch backend takes 1.4 times" in said and "unset KERAS_BACKEND" in said


@pytest.mark.usefixtures("functions_run_eagerly")
def test_run_interrupted_in_the_fine_tuning_resumes_it(tmp_path, isbi_data):
    """The epochs are not trained again: the fine-tuning against merges goes on
    from its last saved step (every 25)."""
    from unet_keras.malis import MergeWeightedLoss

    config = tiny_config(tmp_path, isbi_data, malis_steps=30, overlays=False)
    with pytest.raises(Interrupt):
        train(config, extra_callbacks=[InterruptAt(epoch=1, step=27)], verbose=0)
    assert (config.run_dir / "malis").is_dir() and (config.run_dir / "model_fit.keras").is_file()

    recorder = EpochRecorder()
    metrics = train(config, extra_callbacks=[recorder], verbose=0)
    assert recorder.epochs == [] and recorder.batches == list(range(25, 30))
    assert metrics["train_seconds"] > 0  # the first call's epochs, kept
    assert not (config.run_dir / "malis").exists()
    tuned = keras.models.load_model(config.run_dir / "model.keras")
    assert isinstance(tuned.loss, MergeWeightedLoss)  # reloads without custom_objects
    assert len(read_history(config.run_dir / "history.csv")["loss"]) == 2


class InterruptAtTheEnd(keras.callbacks.Callback):
    """A Ctrl-C just after `fit`'s last callbacks: `BackupAndRestore` has
    deleted its backup, and the fine-tuning has not begun."""

    def on_train_end(self, logs=None):
        raise Interrupt


def interrupt_before_the_backup_is_deleted(self, logs=None):
    raise Interrupt


@pytest.mark.parametrize("backup_deleted", [True, False])
@pytest.mark.usefixtures("functions_run_eagerly")
def test_run_stopped_as_the_epochs_end_does_not_train_them_again(
    tmp_path, isbi_data, monkeypatch, backup_deleted
):
    config = tiny_config(tmp_path, isbi_data, overlays=False)
    with monkeypatch.context() as patch, pytest.raises(Interrupt):
        if backup_deleted:
            train(config, extra_callbacks=[InterruptAtTheEnd()], verbose=0)
        else:
            patch.setattr(keras.callbacks.BackupAndRestore, "on_train_end",
                          interrupt_before_the_backup_is_deleted)
            train(config, verbose=0)
    assert (config.run_dir / "backup").is_dir() != backup_deleted
    assert not (config.run_dir / "malis").exists()

    recorder = EpochRecorder()
    metrics = train(config, extra_callbacks=[recorder], verbose=0)
    assert recorder.epochs == [] and recorder.batches == [0, 1]  # only the fine-tuning
    assert metrics["train_seconds"] > 0 and metrics["malis_seconds"] > 0
    assert (config.run_dir / "model_fit.keras").is_file()
    for leftover in ("backup", "malis", "progress.json"):
        assert not (config.run_dir / leftover).exists(), leftover


@pytest.mark.usefixtures("functions_run_eagerly")
def test_run_stopped_while_predicting_keeps_its_model(tmp_path, isbi_data, monkeypatch):
    """The model is final: a restart predicts again and trains nothing."""
    import unet_keras.train

    def interrupt(*args, **kwargs):
        raise Interrupt

    config = tiny_config(tmp_path, isbi_data, overlays=False)
    with monkeypatch.context() as patch, pytest.raises(Interrupt):
        patch.setattr(unet_keras.train, "predict_and_score", interrupt)
        train(config, verbose=0)
    tuned = keras.models.load_model(config.run_dir / "model.keras").get_weights()

    recorder = EpochRecorder()
    metrics = train(config, extra_callbacks=[recorder], verbose=0)
    assert recorder.epochs == recorder.batches == []
    assert metrics["train_seconds"] > 0 and metrics["malis_seconds"] > 0
    kept = keras.models.load_model(config.run_dir / "model.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(kept, tuned))
    assert (config.run_dir / "metrics.json").is_file()
    assert not (config.run_dir / "progress.json").exists()


@pytest.mark.usefixtures("functions_run_eagerly")
def test_restart_without_the_fine_tuning_keeps_the_epochs(tmp_path, isbi_data):
    """Stopped in the fine-tuning and started again with malis_steps=0: the
    best epoch's model is kept as it was, and nothing is trained again."""
    config = tiny_config(tmp_path, isbi_data, malis_steps=30, overlays=False)
    with pytest.raises(Interrupt):
        train(config, extra_callbacks=[InterruptAt(epoch=1, step=3)], verbose=0)
    fit_weights = keras.models.load_model(config.run_dir / "model_fit.keras").get_weights()
    recorder = EpochRecorder()
    metrics = train(dataclasses.replace(config, malis_steps=0), extra_callbacks=[recorder],
                    verbose=0)
    assert recorder.epochs == recorder.batches == []
    assert metrics["train_seconds"] > 0 and metrics["malis_seconds"] == 0
    assert not (config.run_dir / "malis").exists()
    kept = keras.models.load_model(config.run_dir / "model.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(kept, fit_weights))


@pytest.mark.usefixtures("functions_run_eagerly")
def test_time_budget_shortens_the_run_and_a_restart_keeps_its_steps(tmp_path, isbi_data):
    """A budget smaller than the fixed costs passes over the larger configuration
    and leaves the smaller fallback half its steps; a restart without a budget,
    which would train them all, resumes the same run, fallback and steps."""
    config = tiny_config(tmp_path, isbi_data, steps_per_epoch=4, overlays=False,
                         time_budget_minutes=0.01)
    larger = dataclasses.replace(config, filters=6, steps_per_epoch=1000)
    with pytest.raises(Interrupt):
        train(larger, extra_callbacks=[InterruptAt(epoch=1, step=0)], verbose=0,
              fallbacks=[config])
    saved = TrainConfig.from_json((config.run_dir / "config.json").read_text())
    assert saved == dataclasses.replace(config, steps_per_epoch=2, malis_steps=1)

    recorder = EpochRecorder()
    train(dataclasses.replace(larger, time_budget_minutes=0), extra_callbacks=[recorder],
          verbose=0, fallbacks=[dataclasses.replace(config, time_budget_minutes=0)])
    assert recorder.epochs == [1] and recorder.batches == [0, 1, 0]  # epoch 1, fine-tuning
    saved = TrainConfig.from_json((config.run_dir / "config.json").read_text())
    assert (saved.filters, saved.steps_per_epoch, saved.malis_steps) == (4, 2, 1)
    assert len(read_history(config.run_dir / "history.csv")["loss"]) == 2
    model = keras.models.load_model(config.run_dir / "model.keras")
    first = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert first.filters == 4  # the fallback's network, not the larger one


@pytest.mark.usefixtures("functions_run_eagerly")
def test_a_restart_without_the_budget_keeps_the_steps_it_cut(tmp_path, isbi_data):
    """No fallbacks: the run resumes as config.json has it, not with the steps
    that the request without a budget would train."""
    config = tiny_config(tmp_path, isbi_data, steps_per_epoch=4, overlays=False,
                         time_budget_minutes=0.01)
    with pytest.raises(Interrupt):
        train(config, extra_callbacks=[InterruptAt(epoch=1, step=0)], verbose=0)
    cut = TrainConfig.from_json((config.run_dir / "config.json").read_text())
    assert (cut.steps_per_epoch, cut.malis_steps) == (2, 1)

    recorder = EpochRecorder()
    train(dataclasses.replace(config, time_budget_minutes=0), extra_callbacks=[recorder],
          verbose=0)
    assert recorder.epochs == [1] and recorder.batches == [0, 1, 0]  # epoch 1, fine-tuning
    saved = TrainConfig.from_json((config.run_dir / "config.json").read_text())
    assert saved == dataclasses.replace(cut, time_budget_minutes=0)


@pytest.mark.usefixtures("functions_run_eagerly")
def test_a_restart_goes_on_with_the_model_it_started(tmp_path, isbi_data, capsys):
    """Another network is refused before config.json is rewritten, with the
    fields that differ; options that do not change the model resume the run."""
    config = tiny_config(tmp_path, isbi_data, epochs=3, overlays=False)
    with pytest.raises(Interrupt):
        train(config, extra_callbacks=[InterruptAt(epoch=1, step=1)], verbose=0)
    saved = (config.run_dir / "config.json").read_bytes()
    wider = dataclasses.replace(config, filters=8, seed=1)
    with pytest.raises(ValueError) as refused:
        train(wider, verbose=0)
    assert str(refused.value) == (
        f"{config.run_dir}/ holds an unfinished run of another configuration (filters 4 "
        "there, 8 asked; seed 0 there, 1 asked). To resume it, run the command that started "
        "it again (its config.json holds the configuration); to train this one, give it "
        f"another name (--name; make train RUN=NAME), or delete {config.run_dir}/ to start "
        "over."
    )
    assert (config.run_dir / "config.json").read_bytes() == saved
    assert (config.run_dir / "backup").is_dir()

    # The data named another way, other threads, and a budget that would cut the steps.
    moved = dataclasses.replace(config, data_dir=f"{isbi_data}/.", workers=1,
                                time_budget_minutes=0.01)
    recorder = EpochRecorder()
    capsys.readouterr()
    train(moved, extra_callbacks=[recorder], verbose=2)
    assert recorder.epochs == [1, 2] and recorder.batches == [0, 1, 2] * 2 + [0, 1]
    assert (f"Resuming the interrupted run in {config.run_dir}/ (4 filters, 3 epochs of 3 "
            "steps, as it started) from its backup.") in capsys.readouterr().out
    assert TrainConfig.from_json((config.run_dir / "config.json").read_text()) == moved
    assert read_history(config.run_dir / "history.csv")["epoch"] == [0, 1, 2]


@pytest.mark.usefixtures("functions_run_eagerly")
def test_a_spent_budget_shortens_the_fine_tuning_and_says_so(tmp_path, isbi_data):
    """`make train` after a set-up that used up its budget: the budget halves
    the steps, and the clock stops the fine-tuning at its second step, the first
    after one is timed. config.json and metrics.json say what was trained, and
    the finished run is kept by the next call."""
    config = tiny_config(tmp_path, isbi_data, epochs=1, steps_per_epoch=2, malis_steps=8,
                         overlays=False, time_budget_minutes=1)
    with pytest.raises(ValueError, match="in the future"):
        train(config, verbose=0, started_at=time.time() + 3600)
    metrics = train(config, verbose=0, started_at=time.time() - 3600)
    saved = TrainConfig.from_json((config.run_dir / "config.json").read_text())
    assert (saved.steps_per_epoch, saved.malis_steps) == (1, 2)  # halved, then stopped
    assert metrics["malis_steps"] == 2
    assert len(read_history(config.run_dir / "history.csv")["loss"]) == 1
    assert not (config.run_dir / "malis").exists()
    assert train(config, verbose=0) == json.loads((config.run_dir / "metrics.json").read_text())


def test_weighted_loss_with_the_valid_network(tmp_path, isbi_data):
    """The paper's setting: valid convolutions, border weight maps as sample weights."""
    config = tiny_config(
        tmp_path, isbi_data, loss="weighted_ce", padding="valid", epochs=1, overlays=False,
    )
    metrics = train(config, verbose=0)
    assert np.isfinite(read_history(config.run_dir / "history.csv")["loss"][0])
    assert tifffile.imread(config.run_dir / "predictions" / "val.tif").shape == (2, 512, 512)
    assert 0 <= metrics["val"]["v_rand"] <= 1


@pytest.mark.parametrize(
    "precision, jit",
    [
        pytest.param("mixed_bfloat16", "off", marks=pytest.mark.backends),
        # An older GPU's setting (float16 and XLA), with XLA on TensorFlow only.
        pytest.param("mixed_float16", "on", marks=pytest.mark.skipif(
            keras.backend.backend() != "tensorflow", reason="XLA via TensorFlow")),
    ],
)
def test_mixed_precision_run(tmp_path, isbi_data, precision, jit, recwarn):
    """The GPU configuration's precision and compilation, forced on the CPU:
    the run trains with float16 or bfloat16 activations (float16 behind a loss
    scale), the saved model keeps float32 weights and a float32 output,
    folding and prediction work on it, and the global policy is restored."""
    config = tiny_config(
        tmp_path, isbi_data, mixed_precision=precision, jit_compile=jit, epochs=1,
        overlays=False,
    )
    metrics = train(config, verbose=0)
    # train reloads the best model uncompiled: the loss-scale optimiser's state
    # of a float16 run does not fit a plain optimiser, and Keras warns about it.
    assert not [w for w in recwarn if "Skipping variable loading" in str(w.message)]
    assert metrics["precision"] == precision and metrics["xla"] == (jit == "on")
    assert keras.config.dtype_policy().name == "float32"
    assert np.isfinite(read_history(config.run_dir / "history.csv")["loss"][0])

    model = keras.models.load_model(config.run_dir / "model.keras", compile=False)
    compute = precision.removeprefix("mixed_")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.compute_dtype == compute for layer in convs)
    assert all(w.dtype == "float32" for w in model.weights)
    assert model.layers[-1].compute_dtype == "float32"
    val = tifffile.imread(config.run_dir / "predictions" / "val.tif")
    assert val.dtype == np.float32 and np.isfinite(val).all()
    assert 0 <= val.min() and val.max() <= 1 and val.std() > 0
    assert 0 <= metrics["val"]["v_rand"] <= 1


@pytest.mark.parametrize("architecture, output", [("unet++", "x0_2"), ("unet3+", "de1")])
def test_deeply_supervised_run(tmp_path, isbi_data, architecture, output, capsys):
    """U-Net++ and UNet 3+ train on every output and are checkpointed, plotted,
    scored and predicted through their full-resolution output alone."""
    from unet_keras.cli import main

    config = tiny_config(tmp_path, isbi_data, architecture=architecture, overlays=False)
    metrics = train(config, verbose=0)
    history = read_history(config.run_dir / "history.csv")
    assert len(history[f"val_{output}_dice"]) == 2  # the checkpoint's monitor
    assert f"val_{output}_iou" in history  # Dice and IoU of the prediction only
    model = keras.models.load_model(config.run_dir / "model_fit.keras", compile=False)
    assert len(model.outputs) > 1  # the epochs' best, side outputs too
    assert {f"{name}_loss" for name in model.output_names} <= set(history)
    tuned = keras.models.load_model(config.run_dir / "model.keras", compile=False)
    assert tuned.output_names == [output]  # fine-tuned through the prediction alone
    assert (config.run_dir / "curves.png").is_file()
    val = tifffile.imread(config.run_dir / "predictions" / "val.tif")
    assert val.shape == (2, 512, 512) and 0 <= val.min() and val.max() <= 1
    assert 0 <= metrics["val"]["v_rand"] <= 1
    # The scores are those of the saved full-resolution map (a side output would
    # score otherwise). Six steps of a 4-filter network may predict no membrane
    # at all (as PyTorch's draw of UNet 3+ does), so the test does not ask for any.
    _, masks = load_isbi2012(isbi_data, split="train")
    membrane, predicted = masks[list(config.val_slices), ..., 0] == 1, val >= 0.5
    overlap, total = (membrane & predicted).sum(), membrane.sum() + predicted.sum()
    assert metrics["val"]["pixel_error"] == pytest.approx((membrane != predicted).mean(), abs=1e-4)
    assert metrics["val"]["dice"] == pytest.approx(2 * overlap / total, abs=1e-4)

    images = tmp_path / "slices.tif"
    tifffile.imwrite(images, (255 * np.random.default_rng(0).random((1, 70, 90))).astype("uint8"))
    out = tmp_path / "pred.tif"
    assert main(["predict", "--model", str(config.run_dir / "model.keras"),
                 "--input", str(images), "--output", str(out), "--no-tta"]) == 0
    assert tifffile.imread(out).shape == (1, 70, 90)


def test_training_batches_come_from_threads(isbi_data):
    """Keras's own enqueuer (workers > 1) rather than a tf.data autotuned
    prefetch, whose teardown at each epoch end paused training for seconds."""
    from unet_keras.datasets import load_isbi2012
    from unet_keras.train import _datasets

    images, masks = load_isbi2012(isbi_data)
    train_data = _datasets(TrainConfig(), images, masks)[2]
    assert train_data.workers > 1 and not train_data.use_multiprocessing


def test_zoom_range_reaches_the_training_tiles(isbi_data):
    from unet_keras.datasets import load_isbi2012
    from unet_keras.train import _datasets

    images, masks = load_isbi2012(isbi_data)
    train_data = _datasets(TrainConfig(zoom_range=(-0.1, 0.2)), images, masks)[2]
    assert train_data.augmenter.zoom_range == (-0.1, 0.2)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow setting")
def test_train_refuses_weights_assumed_frozen(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "1")
    config = TrainConfig(runs_dir=str(tmp_path), data_dir=str(tmp_path / "data"))
    with pytest.raises(FrozenWeightsError, match="TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"):
        train(config, verbose=0)
    assert not (tmp_path / "default").exists()  # refused before anything was written


def test_train_refuses_a_fallback_with_another_run_folder(tmp_path):
    config = TrainConfig(runs_dir=str(tmp_path), data_dir=str(tmp_path / "data"))
    elsewhere = TrainConfig(name="other", runs_dir=str(tmp_path))
    with pytest.raises(ValueError, match="same `name` and `runs_dir`"):
        train(config, verbose=0, fallbacks=[elsewhere])
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_residual_option_reaches_the_network():
    plain = build_model(TrainConfig(filters=4, depth=2))
    residual = build_model(TrainConfig(filters=4, depth=2, residual=True))
    assert not any("shortcut" in layer.name for layer in plain.layers)
    assert sum(layer.name.endswith("_shortcut_conv") for layer in residual.layers) == 5
    assert json.loads(TrainConfig(residual=True).to_json())["residual"] is True
