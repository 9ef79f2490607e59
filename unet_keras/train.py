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

import dataclasses
import shutil
import time

import keras

from unet_keras.backend_utils import (
    choose_precision,
    detect_device,
    slow_cpu_backend_hint,
    supports_jit,
    unseen_gpu_hint,
)
from unet_keras.budget import FineTuningDeadline, choose_within_budget, time_training_step
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
from unet_keras.plots import plot_history
from unet_keras.progress import (
    PROGRESS,
    finished_run,
    fit_callbacks,
    read_progress,
    record_progress,
    unfinished_run,
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


def _within_budget(candidates, images, masks, device, started_at, say):
    """The first of `candidates` that fits its time budget, or the last with as
    many steps as fit (`budget.choose_within_budget`), each timed on a
    throwaway model."""
    if not candidates[0].time_budget_minutes:
        return candidates[0]

    def time_step(config):
        keras.config.set_dtype_policy(choose_precision(config.mixed_precision, device))
        probe = compile_model(build_model(config), config, jit_compile=_uses_jit(config, device))
        batch = _datasets(config, images, masks, probe.output_names)[2][0]
        return time_training_step(probe, batch)

    config, sentences = choose_within_budget(candidates, time_step, started_at)
    for sentence in sentences:
        say(sentence)
    return config


def _fine_tune(config, network, images, masks, jit, callbacks, deadline, say, verbose):
    """`config.malis_steps` steps of `malis.fine_tune_merges` on fresh tiles,
    resumable from `run_dir/malis/`; with a time budget, fewer where the run
    would end past `deadline`. Returns the network and the config with the
    steps it had."""
    # seed + 1: not the tiles of the first epoch.
    tiles = _training_tiles(config, images, masks, config.malis_steps, config.seed + 1)
    guard = FineTuningDeadline(deadline, config) if config.time_budget_minutes else None
    network = fine_tune_merges(
        network, tiles, _loss(config), weight=config.malis_weight,
        learning_rate=config.malis_learning_rate,
        state_path=config.run_dir / "malis" / "model.keras",
        callbacks=[*callbacks, *([guard] if guard else [])], jit_compile=jit, verbose=verbose,
    )
    if guard and (guard.stopped_after or config.malis_steps) < config.malis_steps:
        say(f"The fine-tuning stopped after {guard.stopped_after} of its {config.malis_steps} "
            "steps, so that the run ends within its time budget.")
        config = dataclasses.replace(config, malis_steps=guard.stopped_after)
        (config.run_dir / "config.json").write_text(config.to_json())  # what was trained
    return network, config


def train(config=None, extra_callbacks=(), verbose=1, fallbacks=(), started_at=None):
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
        started_at: When the time budget began, a `time.time()`; None: now.
            `make train` passes its own start, so that the set-up counts.

    A folder that holds a finished run of the same configuration is kept as
    it is: `train` trains nothing and returns its scores. One that holds an
    unfinished run is resumed with the configuration it started with, steps
    included; the call may change only what does not change the trained model
    (`budget.RESTART_FIELDS`, e.g. `workers` or the budget) and end it without
    more fine-tuning (`malis_steps=0`).

    Returns:
        The dict written to `metrics.json`.

    Raises:
        ValueError: For a fallback with another run folder, a run folder
            that holds a finished run of another configuration or an
            unfinished run of another model, or a `started_at` in the future.
        tensorflow_env.FrozenWeightsError: On TensorFlow, when
            `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS` is set (the model would not learn).
    """
    started_at = time.time() if started_at is None else started_at
    if started_at > time.time() + 1:
        raise ValueError(
            f"`started_at` ({started_at:.0f}) is in the future: give the time the run's "
            "budget began, e.g. `date +%s` when the set-up started, or leave it out."
        )
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
    # Before config.json is rewritten: a restart resumes what it started as, or is refused.
    started = unfinished_run(run_dir, [config, *fallbacks])
    config = started or config
    progress = read_progress(run_dir)
    resuming = "train_seconds" not in progress and (run_dir / "backup").is_dir()
    # Named, since the preset picked for this machine may not be the one it started as.
    what = (f" ({config.filters} filters, {config.epochs} epochs of {config.steps_per_epoch} "
            "steps, as it started)" if started else "")
    if resuming:
        say(f"Resuming the interrupted run in {run_dir}/{what} from its backup.")
    elif progress:
        left = "predictions" if "malis_seconds" in progress else "fine-tuning against merges"
        say(f"Resuming the interrupted run in {run_dir}/{what} with its {left}.")
    run_dir.mkdir(parents=True, exist_ok=True)

    device = detect_device()
    root = download_isbi2012(config.data_dir, base_url=config.data_url, progress=bool(verbose))
    images, masks = load_isbi2012(root, split="train")
    test_images = load_isbi2012(root, split="test")

    previous_policy = keras.config.dtype_policy()
    try:
        if started is None:
            config = _within_budget([config, *fallbacks], images, masks, device, started_at, say)
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
            callbacks = fit_callbacks(config, resuming, extra_callbacks, f"val_{dice}")
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
                network, config = _fine_tune(
                    config, network, images[train_idx], masks[train_idx], jit,
                    extra_callbacks, started_at + 60 * config.time_budget_minutes, say, verbose,
                )
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
            "malis_steps": config.malis_steps,
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
