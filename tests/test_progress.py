"""The record of a run's finished stages."""

import json

import pytest

from unet_keras.progress import PROGRESS, finished_metrics, read_progress, record_progress


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
    assert finished_metrics(tmp_path) is None  # a new run
    (tmp_path / leftover).mkdir()
    (tmp_path / "metrics.json").write_text('{"val": {"v_rand": 0.98}}')
    assert finished_metrics(tmp_path) is None  # scores of an earlier stop, a stage unfinished
    (tmp_path / leftover).rmdir()
    assert finished_metrics(tmp_path) == {"val": {"v_rand": 0.98}}
