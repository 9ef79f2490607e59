"""Training on ISBI 2012: one `TrainConfig` shared by the CLI, the notebooks
and the Python API, and `train`, which writes a complete run folder.

    runs/<name>/
        config.json            the TrainConfig of the run
        history.csv            per-epoch metrics (Keras CSVLogger)
        model.keras            the best model on the validation slices, fine-tuned
                               against merges (malis_steps; model_fit.keras before)
        curves.png             loss and Dice per epoch
        metrics.json           ISBI scores of the held-out slices, timings, device
        predictions/val.tif    float32 membrane probabilities, held-out slices
        predictions/test.tif   the same for the 30 test slices
        predictions/*_ridges.tif  both with the boundaries on their ridges (`ridges`)
        predictions/*_watershed.tif  both with the gaps closed (postprocess.py)
        predictions/*_agglomerated.tif  both merged by the learned merging
        merge_classifier.json  that merging, fitted on the training slices (agglomeration.py)
        overlays/*.png         held-out predictions over the images, with error maps
        backup/, malis/        the state of an unfinished run's epochs, fine-tuning
        progress.json          the stages an unfinished run has finished

Starting `train` again with the same run folder resumes an interrupted run where
it stopped: from its last finished epoch, from the fine-tuning's last saved
step, or, once the model is final, with the predictions.
"""

import shutil
import time

import keras

from unet_keras.backend_utils import (
    KeepFreedMemory,
    choose_precision,
    detect_device,
    slow_cpu_backend_hint,
    supports_jit,
    unseen_gpu_hint,
)
from unet_keras.budget import as_started, choose_within_budget, time_training_step
from unet_keras.config import ARCHITECTURES, LOSSES, TrainConfig  # noqa: F401 (the API)
from unet_keras.datasets import download_isbi2012, load_isbi2012, split_slices
from unet_keras.family import build_unet3plus, build_unet_plus_plus, prediction_network
from unet_keras.folding import fold_batch_norm
from unet_keras.geometry import valid_output_size
from unet_keras.losses import BCEDiceLoss, DiceLoss, WeightedCrossEntropy
from unet_keras.malis import fine_tune_merges
from unet_keras.metrics import BinaryIoU, DiceCoefficient
from unet_keras.model import build_unet
from unet_keras.pipeline import PerOutputDataset, TileDataset
from unet_keras.plots import plot_history, read_history
from unet_keras.progress import (
    PROGRESS,
    RecordEpochsDone,
    finished_run,
    read_progress,
    record_progress,
)
from unet_keras.report import format_scores, predict_and_score
from unet_keras.tensorflow_env import check_weights_not_frozen
from unet_keras.weights import border_weight_maps


def build_model(config):
    """The uncompiled network of a config (`compile_model` compiles it).

    U-Net++ and UNet 3+ are built with deep supervision: one output per
    supervised node, all trained on the same mask.
    """
    if config.architecture == "unet++":
        return build_unet_plus_plus(
            (None, None, 1), depth=config.depth, filters=config.filters,
            batch_norm=config.batch_norm, upsampling=config.upsampling, deep_supervision=True,
        )
    if config.architecture == "unet3+":
        # Every full-scale skip gets as many channels as level 1, as in the paper (64, 64).
        return build_unet3plus(
            (None, None, 1), filters=[config.filters * 2**i for i in range(config.depth + 1)],
            cat_channels=config.filters, batch_norm=config.batch_norm, deep_supervision=True,
        )
    return build_unet(
        input_shape=(None, None, 1), num_classes=1, depth=config.depth,
        filters=config.filters, batch_norm=config.batch_norm, dropout=config.dropout,
        padding=config.padding, upsampling=config.upsampling, residual=config.residual,
    )


def _loss(config):
    return {
        "bce": keras.losses.BinaryCrossentropy(),
        "dice": DiceLoss(),
        "bce_dice": BCEDiceLoss(),
        "bce_cldice": BCEDiceLoss(dice_weight=0.5, cldice_weight=0.5),
        "weighted_ce": WeightedCrossEntropy(),
    }[config.loss]


def _optimizer(config):
    total_steps = config.epochs * config.steps_per_epoch
    rate = config.learning_rate
    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=total_steps, alpha=0.01,
        )
    ema = dict(use_ema=True, ema_momentum=config.ema) if config.ema else {}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.99, **ema)  # the paper's momentum
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay or 1e-4, **ema)
    return keras.optimizers.Adam(rate, **ema)


def compile_model(model, config, jit_compile=False):
    """Compiles `model` with the config's loss, optimiser and schedule.

    A deeply supervised model is trained on the mean of its outputs' losses,
    so that its loss has the scale of a U-Net's; Dice and IoU are measured on
    its prediction output alone (`family.prediction_network`).
    """
    metrics = [DiceCoefficient(), BinaryIoU(target_class_ids=[1], name="iou")]
    loss, loss_weights, n = _loss(config), None, len(model.outputs)
    if n > 1:
        loss, loss_weights = [loss] * n, [1 / n] * n
        final = prediction_network(model).output_names[0]
        metrics = [metrics if name == final else [] for name in model.output_names]
    model.compile(
        optimizer=_optimizer(config), loss=loss, loss_weights=loss_weights, metrics=metrics,
        jit_compile=jit_compile,
    )
    return model


def dice_key(model):
    """The name under which Keras logs the Dice of a compiled model's
    prediction: `"dice"`, or `"<output>_dice"` for a multi-output model."""
    if len(model.outputs) == 1:
        return "dice"
    return f"{prediction_network(model).output_names[0]}_dice"


def _best_so_far(history_csv, monitor):
    """The best monitored value of the finished epochs of a resumed run, so
    that the checkpoint is not overwritten by a worse epoch after the restart."""
    if not history_csv.is_file():
        return None
    values = read_history(history_csv).get(monitor)
    return max(values) if values else None


def _callbacks(config, run_dir, resuming, extra_callbacks, monitor="val_dice"):
    best = _best_so_far(run_dir / "history.csv", monitor) if resuming else None
    callbacks = [
        RecordEpochsDone(run_dir), keras.callbacks.BackupAndRestore(str(run_dir / "backup"))
    ]
    if config.ema:
        # Before ModelCheckpoint: validation and the checkpoint see the averaged weights.
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    callbacks += [
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "model.keras"), monitor=monitor, mode="max", save_best_only=True,
            initial_value_threshold=best,
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resuming),
        keras.callbacks.TerminateOnNaN(),
        KeepFreedMemory(),
    ]
    if config.reduce_lr_on_plateau:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max", patience=5, factor=0.5)
        )
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "logs")))
    return callbacks + list(extra_callbacks)


def _output_size(config):
    """The size of a tile's prediction: smaller than the tile for valid padding."""
    if config.padding == "valid":
        return valid_output_size(config.tile_size, config.depth)
    return None


def _training_tiles(config, images, masks, steps, seed, weights=None):
    """Augmented training tiles, as the config asks for them."""
    return TileDataset(
        images, masks, weights,
        tile_size=config.tile_size, output_size=_output_size(config),
        batch_size=config.batch_size, steps=steps, elastic=config.elastic,
        symmetries=config.symmetries, affine=config.affine, gray=config.gray, seed=seed,
        augment_options={"zoom_range": config.zoom_range},
        workers=config.workers, use_multiprocessing=False,  # threads: a batch takes ~5 ms
    )


def _datasets(config, images, masks, output_names=("output",)):
    train_idx, val_idx = split_slices(len(images), val=config.val_slices)
    weights = None
    if config.loss == "weighted_ce":
        weights = border_weight_maps(masks[train_idx], w0=config.w0, sigma=config.sigma)
    train_data = _training_tiles(
        config, images[train_idx], masks[train_idx], config.steps_per_epoch, config.seed,
        weights,
    )
    if config.padding == "same":
        val_data = (images[val_idx], masks[val_idx])  # whole slices: 512 divides by 2**depth
    else:
        val_data = TileDataset(
            images[val_idx], masks[val_idx], tile_size=config.tile_size,
            output_size=_output_size(config), batch_size=config.batch_size, augment=False,
            seed=config.seed,
        )
    if len(output_names) > 1:  # deep supervision: the same target for every output
        train_data = PerOutputDataset(train_data, output_names)
        if isinstance(val_data, tuple):
            val_data = (val_data[0], {name: val_data[1] for name in output_names})
        else:
            val_data = PerOutputDataset(val_data, output_names)
    return train_idx, val_idx, train_data, val_data


def _uses_jit(config, device):
    return supports_jit(device) if config.jit_compile == "auto" else config.jit_compile == "on"


def _within_budget(candidates, images, masks, device, restarting, say):
    """The first of `candidates` that fits its time budget, or the last with as
    many steps as fit (`budget.choose_within_budget`), each timed on a
    throwaway model. A restarted run keeps the configuration and the steps it
    started with, which its `config.json` holds."""
    saved = candidates[0].run_dir / "config.json"
    if restarting and saved.is_file():
        return as_started(candidates, TrainConfig.from_json(saved.read_text()))
    if not candidates[0].time_budget_minutes:
        return candidates[0]

    def time_step(config):
        keras.config.set_dtype_policy(choose_precision(config.mixed_precision, device))
        probe = compile_model(build_model(config), config, jit_compile=_uses_jit(config, device))
        batch = _datasets(config, images, masks, probe.output_names)[2][0]
        return time_training_step(probe, batch)

    config, sentences = choose_within_budget(candidates, time_step)
    for sentence in sentences:
        say(sentence)
    return config


def _fine_tune(config, network, images, masks, run_dir, jit, callbacks, verbose):
    """`config.malis_steps` steps of `malis.fine_tune_merges` on fresh tiles,
    resumable from `run_dir/malis/`."""
    # seed + 1: not the tiles of the first epoch.
    tiles = _training_tiles(config, images, masks, config.malis_steps, config.seed + 1)
    return fine_tune_merges(
        network, tiles, _loss(config), weight=config.malis_weight,
        learning_rate=config.malis_learning_rate, state_path=run_dir / "malis" / "model.keras",
        callbacks=callbacks, jit_compile=jit, verbose=verbose,
    )


def train(config=None, extra_callbacks=(), verbose=1, fallbacks=()):
    """Trains a U-Net on ISBI 2012 and writes the run folder.

    Downloads the data if needed, trains on the slices not held out, keeps
    the best model on the held-out slices, predicts the held-out and test
    slices with overlap-tile inference, and scores the held-out ones like the
    ISBI leaderboard.

    Args:
        config: A `TrainConfig`; None uses `TrainConfig.auto()`.
        extra_callbacks: More Keras callbacks for `fit`.
        verbose: Keras verbosity of `fit`; 0 also silences this function.
        fallbacks: Smaller `TrainConfig`s for the same run folder, to train
            instead of `config` when its whole schedule does not fit its
            `time_budget_minutes`: the first that fits, or else the last,
            shortened (`budget.choose_within_budget`). Without a budget they
            are not trained, but a restart still resumes the one it started as.

    A folder that holds a finished run of the same configuration is kept as
    it is: `train` trains nothing and returns its scores.

    Returns:
        The dict written to `metrics.json`.

    Raises:
        ValueError: For a fallback with another run folder, or a run folder
            that holds a finished run of another configuration.
        RuntimeError: On TensorFlow, when `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS` is
            set (the model would not learn).
    """
    config = config or TrainConfig.auto()
    if any(fallback.run_dir != config.run_dir for fallback in fallbacks):
        raise ValueError(
            f"Every fallback must train into the run folder of `config`, {config.run_dir}: "
            "give them the same `name` and `runs_dir`."
        )
    if keras.backend.backend() == "tensorflow":
        check_weights_not_frozen()
    say = print if verbose else (lambda *a, **k: None)
    run_dir = config.run_dir
    finished = finished_run(run_dir, [config, *fallbacks])
    if finished is not None:  # trained already: keep it rather than train over it
        say(f"{run_dir}/ holds a finished run of this configuration, so nothing is trained. "
            f"To train it again, delete {run_dir}/ or give the run another name "
            "(--name; make train RUN=NAME).")
        say(format_scores(finished))
        return finished
    progress = read_progress(run_dir)
    resuming = "train_seconds" not in progress and (run_dir / "backup").is_dir()
    if resuming:
        say(f"Resuming the interrupted run in {run_dir}/ from its backup.")
    elif progress:
        left = "predictions" if "malis_seconds" in progress else "fine-tuning against merges"
        say(f"Resuming the interrupted run in {run_dir}/ with its {left}.")
    run_dir.mkdir(parents=True, exist_ok=True)

    device = detect_device()
    root = download_isbi2012(config.data_dir, base_url=config.data_url, progress=bool(verbose))
    images, masks = load_isbi2012(root, split="train")
    test_images = load_isbi2012(root, split="test")

    previous_policy = keras.config.dtype_policy()
    try:
        if config.time_budget_minutes or fallbacks:
            config = _within_budget([config, *fallbacks], images, masks, device,
                                    resuming or bool(progress), say)
        keras.utils.set_random_seed(config.seed)  # the same start as without a budget
        precision = choose_precision(config.mixed_precision, device)
        jit = _uses_jit(config, device)
        keras.config.set_dtype_policy(precision)
        say(f"Training on {device}, precision {precision}, XLA {'on' if jit else 'off'}.")
        for hint in (unseen_gpu_hint(device), slow_cpu_backend_hint(device)):
            if hint:
                say(hint)
        (run_dir / "config.json").write_text(config.to_json())
        model = compile_model(build_model(config), config, jit_compile=jit)
        train_idx, val_idx, train_data, val_data = _datasets(
            config, images, masks, model.output_names
        )
        dice = dice_key(model)
        if "train_seconds" not in progress:
            callbacks = _callbacks(config, run_dir, resuming, extra_callbacks, f"val_{dice}")
            model.fit(
                train_data, validation_data=val_data, epochs=config.epochs,
                callbacks=callbacks, verbose=verbose,
            )
            progress = read_progress(run_dir)
        # Left only by a run stopped between the two first callbacks' on_train_end.
        shutil.rmtree(run_dir / "backup", ignore_errors=True)
        # The best epoch's model (model.keras until the fine-tuning ends) without its side
        # outputs. Uncompiled: a float16 run's loss-scale optimiser state would not load
        # into a plain one.
        network = prediction_network(
            keras.models.load_model(run_dir / "model.keras", compile=False)
        )
        malis_dir = run_dir / "malis"
        if "malis_seconds" not in progress:
            malis_seconds = 0.0
            if config.malis_steps:
                if not malis_dir.is_dir():  # not begun: model.keras is the best epoch's
                    shutil.copyfile(run_dir / "model.keras", run_dir / "model_fit.keras")
                    malis_dir.mkdir()
                start = time.perf_counter()
                network = _fine_tune(config, network, images[train_idx], masks[train_idx],
                                     run_dir, jit, extra_callbacks, verbose)
                malis_seconds = time.perf_counter() - start
                network.save(run_dir / "model.keras")
            progress = record_progress(run_dir, malis_seconds=malis_seconds)
        shutil.rmtree(malis_dir, ignore_errors=True)  # also after a restart with malis_steps=0
    finally:
        keras.config.set_dtype_policy(previous_policy)

    model = fold_batch_norm(network)  # the same maps, computed faster
    plot_history(
        run_dir / "history.csv", run_dir / "curves.png", title=f"Run {config.name}", dice_key=dice
    )

    metrics = predict_and_score(
        model, config, run_dir, (images[val_idx], masks[val_idx]), test_images,
        {
            "device": str(device), "precision": precision, "xla": jit,
            "train_seconds": round(progress["train_seconds"], 1),
            "malis_seconds": round(progress["malis_seconds"], 1),
            "train_slices": [int(i) for i in train_idx],
            "val_slices": [int(i) for i in val_idx], "tta": config.tta,
        },
        training=(images[train_idx], masks[train_idx]),
    )
    (run_dir / PROGRESS).unlink(missing_ok=True)  # complete: a new start keeps it (finished_run)
    if verbose:
        print(format_scores(metrics))
        print(f"Everything is in {run_dir}/ (model.keras, metrics.json, predictions/, overlays/).")
    return metrics
