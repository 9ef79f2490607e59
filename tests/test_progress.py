"""The record of a run's finished stages."""

import json

import pytest

from unet_keras.config import TrainConfig
from unet_keras.progress import (
    PROGRESS,
    finished_run,
    fit_callbacks,
    read_progress,
    record_progress,
)


def test_stages_are_added_to_the_record(tmp_path):
    assert read_progress(tmp_path) == {}  # a new run
    record_progress(tmp_path, train_seconds=12.5)
    returned = record_progress(tmp_path, malis_seconds=3.0)
    assert read_progress(tmp_path) == returned == {"train_seconds": 12.5, "malis_seconds": 3.0}
    assert json.loads((tmp_path / PROGRESS).read_text()) == read_progress(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [PROGRESS]  # no partial file left


def test_a_run_folder_of_an_earlier_version_is_read(tmp_path):
    """It marked the epochs done with `malis/fit.json` (their seconds)."""
    (tmp_path / "malis").mkdir()
    (tmp_path / "malis" / "fit.json").write_text("42.0")
    assert read_progress(tmp_path) == {"train_seconds": 42.0}
    record_progress(tmp_path, malis_seconds=3.0)
    assert read_progress(tmp_path) == {"train_seconds": 42.0, "malis_seconds": 3.0}


@pytest.mark.parametrize("leftover", [PROGRESS, "backup", "malis"])
def test_a_run_is_finished_when_its_scores_are_written_and_nothing_is_left(tmp_path, leftover):
    config = TrainConfig(runs_dir=str(tmp_path))
    run_dir = config.run_dir
    assert finished_run(run_dir, [config]) is None  # a new run
    (run_dir / leftover).mkdir(parents=True)
    (run_dir / "config.json").write_text(config.to_json())
    (run_dir / "metrics.json").write_text('{"val": {"v_rand": 0.98}}')
    assert finished_run(run_dir, [config]) is None  # scores of an earlier stop, a stage unfinished
    (run_dir / leftover).rmdir()
    assert finished_run(run_dir, [config]) == {"val": {"v_rand": 0.98}}

    with pytest.raises(ValueError, match="another configuration \\(filters 16 there, 8 asked\\)"):
        finished_run(run_dir, [TrainConfig(runs_dir=str(tmp_path), filters=8)])
    (run_dir / "config.json").unlink()
    with pytest.raises(ValueError, match="its config.json is missing"):
        finished_run(run_dir, [config])


def test_ema_weights_are_swapped_in_before_the_checkpoint(tmp_path):
    config = TrainConfig(runs_dir=str(tmp_path), ema=0.99)
    names = [type(c).__name__ for c in fit_callbacks(config, resuming=False)]
    # BackupAndRestore must save the raw weights, ModelCheckpoint the averaged ones.
    assert names.index("BackupAndRestore") < names.index("SwapEMAWeights")
    assert names.index("SwapEMAWeights") < names.index("ModelCheckpoint")
    assert "SwapEMAWeights" not in [
        type(c).__name__ for c in fit_callbacks(TrainConfig(runs_dir=str(tmp_path)), resuming=False)
    ]
