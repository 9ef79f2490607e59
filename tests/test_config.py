"""TrainConfig: the presets, the machine's choice among them, validation and config.json."""

import dataclasses
import inspect
import json
from pathlib import Path

import pytest

from unet_keras.backend_utils import DeviceInfo
from unet_keras.config import TrainConfig
from unet_keras.malis import fine_tune_merges


@pytest.mark.parametrize(
    "kind, bfloat16_cpu, filters, precision",
    [("GPU", False, 32, "auto"), ("CPU", True, 32, "mixed_bfloat16"), ("CPU", False, 16, "auto")],
)
def test_auto_picks_the_preset_for_the_machine(monkeypatch, kind, bfloat16_cpu, filters, precision):
    device = DeviceInfo("tensorflow", kind, "x", bf16=False)
    monkeypatch.setattr("unet_keras.config.detect_device", lambda: device)
    monkeypatch.setattr("unet_keras.config.computes_bfloat16_on_cpu", lambda d: bfloat16_cpu)
    config = TrainConfig.auto(seed=3)
    assert (config.filters, config.mixed_precision, config.seed) == (filters, precision, 3)
    assert config.tile_size == (384 if kind == "GPU" else 256)


def test_presets_by_name():
    assert TrainConfig.from_preset("cpu", seed=2) == TrainConfig(seed=2)
    assert TrainConfig.from_preset("cpu-bf16") == TrainConfig.for_bfloat16_cpu()
    assert TrainConfig.from_preset("cpu-bf16-24") == TrainConfig.for_slower_bfloat16_cpu()
    assert TrainConfig.from_preset("gpu") == TrainConfig.for_gpu()
    with pytest.raises(ValueError, match="'auto' or one of"):
        TrainConfig.from_preset("tpu")


def test_bfloat16_cpu_preset_is_wider_and_longer_with_the_same_fine_tuning():
    base, wide = TrainConfig(), TrainConfig.for_bfloat16_cpu(epochs=2)
    assert (wide.filters, wide.epochs, wide.mixed_precision) == (32, 2, "mixed_bfloat16")
    assert base.malis_weight == wide.malis_weight == 2.0  # chosen for each network
    # The library function fine-tunes as `train` does unless told otherwise.
    defaults = inspect.signature(fine_tune_merges).parameters
    assert defaults["weight"].default == base.malis_weight
    assert defaults["learning_rate"].default == base.malis_learning_rate == 2e-4
    assert base.malis_steps == wide.malis_steps == 150
    assert wide.steps_per_epoch == base.steps_per_epoch and wide.tile_size == base.tile_size



def test_slower_bfloat16_cpu_preset_sits_between_the_two():
    base, wide = TrainConfig(), TrainConfig.for_bfloat16_cpu()
    middle = TrainConfig.for_slower_bfloat16_cpu()
    assert (middle.filters, middle.epochs, middle.mixed_precision) == (24, 15, "mixed_bfloat16")
    assert base.filters < middle.filters < wide.filters and middle.malis_weight == 2.0
    steps = [c.epochs * c.steps_per_epoch for c in (base, middle, wide)]
    assert steps == [500, 750, 1000]
    assert TrainConfig.for_slower_bfloat16_cpu(filters=20, epochs=2).filters == 20  # overridable


def test_machine_presets_list_the_fallbacks_largest_first(monkeypatch):
    cpu = DeviceInfo("tensorflow", "CPU", "x", bf16=False)
    monkeypatch.setattr("unet_keras.config.detect_device", lambda: cpu)
    monkeypatch.setattr("unet_keras.config.computes_bfloat16_on_cpu", lambda d: True)
    assert TrainConfig.machine_presets() == ("cpu-bf16", "cpu-bf16-24", "cpu")
    filters = [TrainConfig.from_preset(p).filters for p in TrainConfig.machine_presets()]
    assert filters == sorted(filters, reverse=True)
    monkeypatch.setattr("unet_keras.config.computes_bfloat16_on_cpu", lambda d: False)
    assert TrainConfig.machine_presets() == ("cpu",)


def test_config_validation():
    with pytest.raises(ValueError, match="momentum"):
        TrainConfig(ema=1.0)
    with pytest.raises(ValueError, match="workers"):
        TrainConfig(workers=0)
    with pytest.raises(ValueError, match="held-out slice"):
        TrainConfig(val_slices=())
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="focal")
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth"):
        TrainConfig(tile_size=100)
    with pytest.raises(ValueError, match="nearest sizes"):
        TrainConfig(padding="valid", tile_size=250)
    with pytest.raises(ValueError, match="architecture"):
        TrainConfig(architecture="resunet")
    with pytest.raises(ValueError, match="padding='valid'.*architecture='unet'"):
        TrainConfig(architecture="unet++", padding="valid", tile_size=252)
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig(architecture="unet3+", dropout=0.2)
    with pytest.raises(ValueError, match="residual=True.*architecture='unet'"):
        TrainConfig(architecture="unet++", residual=True)
    with pytest.raises(ValueError, match="malis_weight"):
        TrainConfig(malis_weight=-1)
    with pytest.raises(ValueError, match="upsampling='bilinear'"):
        TrainConfig(architecture="unet3+", upsampling="bilinear")
    TrainConfig(architecture="unet++", upsampling="bilinear")  # U-Net++ has both
    with pytest.raises(ValueError, match="zoom_range"):
        TrainConfig(zoom_range=(0.2, -0.1))
    with pytest.raises(ValueError, match="affine=True"):
        TrainConfig(affine=False, zoom_range=0.1)


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", 0.0, "`learning_rate` must be a number > 0"),
    ("learning_rate", -1e-3, "`learning_rate` must be a number > 0"),
    ("learning_rate", float("nan"), "`learning_rate` must be a number > 0"),
    ("w0", -1.0, "`w0` must be a number >= 0"),
    ("sigma", 0.0, "`sigma` must be a number > 0"),
    ("sigma", -2.0, "`sigma` must be a number > 0"),
    ("weight_decay", -0.1, "`weight_decay` must be a number >= 0"),
    ("dropout", 1.0, "`dropout` must be a number in \\[0, 1\\)"),
    ("time_budget_minutes", float("nan"), "`time_budget_minutes` must be a number >= 0"),
    ("time_budget_minutes", float("inf"), "`time_budget_minutes` must be a number >= 0"),
    ("malis_learning_rate", -1e-4, "`malis_learning_rate` must be a number >= 0"),
    ("mixed_precision", "fp8", "`mixed_precision` must be one of 'auto', 'off', 'float32', "
                               "'mixed_float16', 'mixed_bfloat16'; got 'fp8'"),
    ("padding", "full", "`padding` must be one of 'same', 'valid'; got 'full'"),
    ("upsampling", "nearest", "`upsampling` must be one of 'transpose', 'bilinear'"),
    ("jit_compile", "yes", "`jit_compile` must be one of 'auto', 'on', 'off'"),
    ("filters", 0, "`filters` must be an integer >= 1, got 0"),
    ("filters", 2.5, "`filters` must be an integer >= 1, got 2.5"),
    ("depth", 0, "`depth` must be an integer >= 1"),
    ("malis_steps", -1, "`malis_steps` must be an integer >= 0"),
    ("epochs", True, "`epochs` must be an integer >= 1"),
    ("val_slices", (30,), "`val_slices` holds 30: .* indices 0 to 29"),
    ("val_slices", (-1, 3), "`val_slices` holds -1: "),
    ("val_slices", (3, 7, 3), "`val_slices` repeats 3: .*each once"),
    ("val_slices", tuple(range(30)), "`val_slices` holds every slice"),
    ("val_slices", (2.5,), "`val_slices` holds 2.5"),
    ("val_slices", 5, "`val_slices` is 5: it must name at least one held-out slice"),
    ("name", "", "`name` must name the run's folder inside `runs_dir`"),
    ("name", "..", "`name` must name"),
    ("name", "a/b", "without a path separator.*got 'a/b'"),
])
def test_each_field_is_checked_at_construction(field, value, message):
    """Before the download, the data and the run folder: the message names the
    field and what it accepts."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_the_precisions_are_those_the_training_accepts():
    from unet_keras.backend_utils import choose_precision
    from unet_keras.config import PRECISIONS

    cpu = DeviceInfo("tensorflow", "CPU", "x", bf16=False)
    for precision in PRECISIONS:
        choose_precision(precision, cpu)  # raises for one it does not know
        TrainConfig(mixed_precision=precision)


def test_config_json_round_trip_keeps_every_field():
    changed = dict(
        name="wide", runs_dir="elsewhere", data_url="file:///mirror/", architecture="unet++",
        upsampling="bilinear", filters=24, loss="weighted_ce", ema=0.99, val_slices=(3, 7),
        time_budget_minutes=12.5, mixed_precision="mixed_bfloat16", ridges=False,
        learned_merging=False, zoom_range=(-0.1, 0.2),
    )
    assert all(getattr(TrainConfig(), key) != value for key, value in changed.items())
    config = TrainConfig(**changed)
    saved = json.loads(config.to_json())
    assert set(saved) == {field.name for field in dataclasses.fields(TrainConfig)}
    assert saved["val_slices"] == [3, 7] and saved["data_url"] == "file:///mirror/"
    read = TrainConfig.from_json(config.to_json())
    assert read == config and read.val_slices == (3, 7)  # a tuple again, not JSON's list
    assert read.zoom_range == (-0.1, 0.2)
    assert TrainConfig.from_json(TrainConfig().to_json()) == TrainConfig()  # data_url None


def test_config_json_of_an_earlier_version_reads_new_fields_as_their_defaults():
    saved = json.loads(TrainConfig(filters=8, epochs=3).to_json())
    del saved["ridges"]  # a run folder from before the ridge maps could be switched off
    read = TrainConfig.from_json(json.dumps(saved))
    assert read.ridges is True
    assert read == TrainConfig(filters=8, epochs=3)


def test_run_dir_is_the_name_in_runs_dir():
    assert TrainConfig().run_dir == Path("runs") / "default"
    assert TrainConfig(name="wide", runs_dir="/data/runs").run_dir == Path("/data/runs/wide")


def test_config_json_of_another_version_with_unknown_fields_is_a_clear_error():
    saved = json.loads(TrainConfig().to_json())
    saved["crop_border"] = 8  # a field this version does not have
    with pytest.raises(ValueError, match=r"does not know: crop_border\. .*another version"):
        TrainConfig.from_json(json.dumps(saved))
    with pytest.raises(ValueError, match="is a JSON object, got list"):
        TrainConfig.from_json("[1, 2]")


def test_config_file_errors_name_the_file(tmp_path):
    saved = tmp_path / "config.json"
    saved.write_text(TrainConfig(filters=8).to_json())
    assert TrainConfig.from_file(saved, epochs=3) == TrainConfig(filters=8, epochs=3)
    with pytest.raises(ValueError, match="`filters` must be an integer"):
        TrainConfig.from_file(saved, filters=0)  # the overrides are checked too
    cases = {"bad.json": ("not json", "bad.json is not valid JSON"),
             "list.json": ("[1, 2]", "list.json: A TrainConfig is a JSON object, got list"),
             "bogus.json": ('{"bogus": 1}', "bogus.json: .*does not know: bogus"),
             "slices.json": ('{"val_slices": 3}', "slices.json: `val_slices` is 3")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_file(tmp_path / name)
    with pytest.raises(ValueError, match="is a folder: give the config.json of a run"):
        TrainConfig.from_file(tmp_path)
    with pytest.raises(ValueError, match="missing.json does not exist"):
        TrainConfig.from_file(tmp_path / "missing.json")
