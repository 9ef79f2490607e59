"""The stages of a run that are finished, so that `train` resumes an interrupted
run where it stopped.

A run folder's `progress.json` gains `train_seconds` when the epochs end and
`malis_seconds` when the fine-tuning against merges ends; `train` deletes it
once `metrics.json` is written. Inside a stage, Keras's `BackupAndRestore`
(the epochs) and `malis/` (the fine-tuning) hold the state to resume from.
A folder with `metrics.json` and none of these holds a finished run, which
`train` keeps rather than trains over (`finished_run`); one with them holds an
unfinished run, which `train` resumes as it started (`unfinished_run`).
`fit_callbacks` gives `fit` those callbacks, with the checkpoint and the history
that a resumed run continues.
"""

import json
import time
from pathlib import Path

import keras

from unet_keras.backend_utils import KeepFreedMemory
from unet_keras.budget import as_started, differences_from_request
from unet_keras.config import TrainConfig
from unet_keras.plots import read_history

PROGRESS = "progress.json"


def read_progress(run_dir):
    """The finished stages of the run in `run_dir`.

    Args:
        run_dir: A run folder.

    Returns:
        A dict with `train_seconds` once the epochs are done and
        `malis_seconds` once the fine-tuning is; empty for a new or a
        complete run.
    """
    path = Path(run_dir) / PROGRESS
    if path.is_file():
        return json.loads(path.read_text())
    older = Path(run_dir) / "malis" / "fit.json"  # how earlier versions marked the epochs done
    return {"train_seconds": json.loads(older.read_text())} if older.is_file() else {}


def finished_run(run_dir, candidates):
    """The scores of the finished run in `run_dir`, if it holds one.

    Args:
        run_dir: A run folder.
        candidates: The `TrainConfig`s that a new call of `train` asks to
            train there (its config and fallbacks).

    Returns:
        The dict of its `metrics.json`, or None while the folder holds no run
        or an unfinished one (`progress.json`, `backup/` or `malis/` left).

    Raises:
        ValueError: If the finished run is not one the candidates ask for:
            `train` would train over it.
    """
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.json"
    if _unfinished(run_dir) or not metrics.is_file():
        return None
    saved = run_dir / "config.json"
    started = TrainConfig.from_json(saved.read_text()) if saved.is_file() else None
    differences = (differences_from_request(candidates, started) if started
                   else ["its config.json is missing"])
    if differences:
        raise ValueError(
            f"{run_dir}/ holds a finished run of another configuration "
            f"({'; '.join(differences)}). Give this one another name (--name; make train "
            f"RUN=NAME), or delete {run_dir}/ to train over it."
        )
    return json.loads(metrics.read_text())


def unfinished_run(run_dir, candidates):
    """The configuration to resume the unfinished run in `run_dir` with.

    Read before anything is written: a restart goes on with the configuration
    its `config.json` holds (`budget.as_started`), whatever the budget or the
    machine's speed would choose now.

    Args:
        run_dir: A run folder.
        candidates: The `TrainConfig`s that a new call of `train` asks to
            train there (its config and fallbacks).

    Returns:
        That configuration, or None where the folder holds no unfinished run
        (no `progress.json`, `backup/` or `malis/`) or no `config.json`.

    Raises:
        ValueError: If the candidates ask for another model: the message
            names the fields that differ and how to go on.
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.json"
    if not (_unfinished(run_dir) and saved.is_file()):
        return None
    started = TrainConfig.from_json(saved.read_text())
    config = as_started(candidates, started)
    if config is None:
        differences = differences_from_request(candidates, started, restart=True)
        raise ValueError(
            f"{run_dir}/ holds an unfinished run of another configuration "
            f"({'; '.join(differences)}). To resume it, run the command that started it "
            f"again (its config.json holds the configuration); to train this one, give it "
            f"another name (--name; make train RUN=NAME), or delete {run_dir}/ to start over."
        )
    return config


def _unfinished(run_dir):
    """Whether `run_dir` holds the state of a run stopped before its end."""
    return any((run_dir / name).exists() for name in (PROGRESS, "backup", "malis"))


def record_progress(run_dir, **stages):
    """Adds finished stages (`name=seconds`) to `run_dir/progress.json`.

    Returns:
        The record with them, as `read_progress` now returns it.
    """
    run_dir = Path(run_dir)
    progress = {**read_progress(run_dir), **stages}
    # Written beside and renamed: a Ctrl-C leaves the old file or the new one, not half of one.
    partial = run_dir / f"{PROGRESS}.partial"
    partial.write_text(json.dumps(progress))
    partial.replace(run_dir / PROGRESS)
    return progress


class RecordEpochsDone(keras.callbacks.Callback):
    """Records `train_seconds` when `fit` ends.

    Put it before `BackupAndRestore` in the callbacks: Keras calls them in
    order, so the epochs are recorded as done before the backup is deleted,
    and a run stopped in between resumes with the fine-tuning instead of
    training its epochs again.

    Args:
        run_dir: The run folder.
    """

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        record_progress(self.run_dir, train_seconds=time.perf_counter() - self.start)


def fit_callbacks(config, resuming, extra_callbacks=(), monitor="val_dice"):
    """The Keras callbacks of `train`'s `fit`, in the order they must run.

    Args:
        config: The run's `TrainConfig` (its run folder, `ema`,
            `reduce_lr_on_plateau` and `tensorboard`).
        resuming: Whether `fit` resumes from `BackupAndRestore`'s backup: the
            history is appended to, and the checkpoint keeps the best epoch
            before the restart unless a later one beats it.
        extra_callbacks: More callbacks, last.
        monitor: The logged value the checkpoint keeps the best of.

    Returns:
        The list of callbacks.
    """
    run_dir = config.run_dir
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


def _best_so_far(history_csv, monitor):
    """The best monitored value of the finished epochs of a resumed run, so
    that the checkpoint is not overwritten by a worse epoch after the restart."""
    if not history_csv.is_file():
        return None
    # An epoch without the monitored value reads as NaN, which max() would not order.
    values = [v for v in read_history(history_csv).get(monitor, []) if v == v]
    return max(values) if values else None
