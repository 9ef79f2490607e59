"""A time budget shortens the steps of a run that would not fit, and no others."""

import dataclasses

import keras
import numpy as np
import pytest

from unet_keras.budget import (
    FIXED_SECONDS,
    SHORTEST,
    FineTuningDeadline,
    as_started,
    choose_within_budget,
    describe_fit,
    differences_from_request,
    estimate_seconds,
    fit_to_budget,
    time_training_step,
)
from unet_keras.config import TrainConfig


def test_a_run_that_fits_is_left_alone():
    config = TrainConfig(time_budget_minutes=17)
    assert estimate_seconds(config, 0.3) < 17 * 60
    assert fit_to_budget(config, 0.3) is config
    assert "within the budget of 17" in describe_fit(config, config, 0.3)
    tiny = TrainConfig(time_budget_minutes=17, epochs=2, steps_per_epoch=3, malis_steps=2)
    assert "fine-tuning take less than a minute, within" in describe_fit(tiny, tiny, 0.02)
    assert "take about 1 minute, within" in describe_fit(tiny, tiny, 0.2)


def test_no_budget_means_no_limit():
    config = TrainConfig()  # time_budget_minutes=0
    assert fit_to_budget(config, 100.0) is config


def test_a_slower_machine_trains_fewer_steps_that_fit():
    # 1.37 s per step: the default's 500 steps and 150 of fine-tuning on the slower
    # AVX2 machine of December 2026, about 22 minutes with the learned merging's
    # prediction of the training slices.
    config = TrainConfig(time_budget_minutes=17)
    assert estimate_seconds(config, 1.37) > 20 * 60
    fitted = fit_to_budget(config, 1.37)
    assert fitted.epochs == config.epochs  # the same schedule, shorter epochs
    assert 0.65 < fitted.steps_per_epoch / config.steps_per_epoch < 0.8
    # One factor for both stages (within the rounding down of each).
    assert abs(fitted.malis_steps / 150 - fitted.steps_per_epoch / 50) < 0.03
    assert 16 * 60 < estimate_seconds(fitted, 1.37) <= 17 * 60
    assert dataclasses.replace(fitted, steps_per_epoch=50, malis_steps=150) == config
    text = describe_fit(config, fitted, 1.37)
    assert "500 steps and 150 of fine-tuning take about 22 minutes" in text
    assert f"leaves {10 * fitted.steps_per_epoch} steps and {fitted.malis_steps}" in text
    assert "still" not in text


def test_a_budget_too_small_keeps_half_the_steps_and_says_it_overruns():
    config = TrainConfig(time_budget_minutes=5)
    fitted = fit_to_budget(config, 1.37)
    assert fitted.steps_per_epoch == int(50 * SHORTEST)
    assert fitted.malis_steps == int(150 * SHORTEST)
    assert "still take about" in describe_fit(config, fitted, 1.37)


def test_test_time_augmentation_is_counted():
    with_tta, without = TrainConfig(), TrainConfig(tta=False)
    assert estimate_seconds(with_tta, 1.0) > estimate_seconds(without, 1.0)


def test_the_learned_merging_is_counted():
    """It predicts the 25 training slices: 65 steps' time with TTA, about 1.5 minutes
    on the slower AVX2 machine."""
    merging, without = TrainConfig(), TrainConfig(learned_merging=False)
    assert estimate_seconds(merging, 1.37) - estimate_seconds(without, 1.37) == pytest.approx(
        65 * 1.37
    )


class StepTimes:
    """A `time_step` for `choose_within_budget`: seconds by filters, and the calls."""

    def __init__(self, seconds_by_filters):
        self.seconds_by_filters, self.timed = seconds_by_filters, []

    def __call__(self, config):
        self.timed.append(config.filters)
        return self.seconds_by_filters[config.filters]


def test_the_larger_configuration_is_trained_where_it_fits():
    wide = TrainConfig.for_bfloat16_cpu(time_budget_minutes=17)
    times = StepTimes({32: 0.60, 16: 0.28})  # the AVX-512 machine of sessions 12-18
    chosen, sentences = choose_within_budget([wide, TrainConfig(time_budget_minutes=17)], times)
    assert chosen is wide and times.timed == [32]  # the smaller one is not even timed
    assert len(sentences) == 1 and "within the budget of 17" in sentences[0]


def test_a_slower_machine_falls_back_to_the_smaller_configuration_whole():
    wide, small = TrainConfig.for_bfloat16_cpu(time_budget_minutes=17), TrainConfig(
        time_budget_minutes=17
    )
    # 1.51 s a step of the wide preset: the AVX-512 machine of the twentieth session.
    times = StepTimes({32: 1.51, 16: 0.65})
    assert fit_to_budget(wide, 1.51) is not wide  # it would have been cut to half
    chosen, sentences = choose_within_budget([wide, small], times)
    assert chosen is small and times.timed == [32, 16]  # trained as measured, not cut
    assert "1000 steps and 150 of fine-tuning take about 39 minutes" in sentences[0]
    assert sentences[0].endswith(
        "more than the budget of 17 minutes: the next configuration instead, with filters 16 "
        "rather than 32, epochs 10 rather than 20, mixed_precision 'auto' rather than "
        "'mixed_bfloat16'."
    )
    assert "within the budget of 17 minutes." in sentences[1]


def test_the_middle_configuration_is_trained_where_only_it_and_the_smallest_fit():
    chain = [
        TrainConfig.for_bfloat16_cpu(time_budget_minutes=17),
        TrainConfig.for_slower_bfloat16_cpu(time_budget_minutes=17),
        TrainConfig(time_budget_minutes=17),
    ]
    # The steps that a fresh clone's make train timed on the AVX-512 machine of 3 December
    # 2026 (0.85 s: about 21 minutes; 0.51 s), and the 16-filter step of the session before.
    times = StepTimes({32: 0.85, 24: 0.51, 16: 0.45})
    chosen, sentences = choose_within_budget(chain, times)
    assert chosen is chain[1] and times.timed == [32, 24]  # whole, and 16 not timed
    assert "more than the budget of 17 minutes: the next configuration instead, with " \
        "filters 24 rather than 32, epochs 15 rather than 20." in sentences[0]
    assert "750 steps and 150 of fine-tuning" in sentences[1]
    assert "within the budget of 17 minutes" in sentences[1]
    restart = as_started(chain, chain[1])  # a restart resumes it, without timing again
    assert restart == chain[1]


def test_where_nothing_fits_the_last_configuration_is_shortened():
    wide, small = TrainConfig.for_bfloat16_cpu(time_budget_minutes=17), TrainConfig(
        time_budget_minutes=17
    )
    chosen, sentences = choose_within_budget([wide, small], StepTimes({32: 4.0, 16: 1.37}))
    assert chosen == fit_to_budget(small, 1.37) and chosen.filters == 16
    assert chosen.steps_per_epoch < small.steps_per_epoch
    assert len(sentences) == 2 and "leaves" in sentences[1]
    with pytest.raises(ValueError, match="at least one"):
        choose_within_budget([], StepTimes({}))


class Clock:
    """A `clock` for the budget: `now` seconds, moved by the test, and by each
    timing of a candidate (`StepTimes`) if asked to."""

    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def test_the_time_spent_before_the_training_counts():
    """The 24-filter preset at 0.80 s a step (the AVX-512 machine of 7 December 2026,
    about 17 minutes): within 20 minutes after a set-up of 90 s, not after one of
    four minutes, when the 16-filter preset is trained instead."""
    chain = [TrainConfig.for_slower_bfloat16_cpu(time_budget_minutes=20),
             TrainConfig(time_budget_minutes=20)]
    clock = Clock(now=1_000.0)
    chosen, sentences = choose_within_budget(chain, StepTimes({24: 0.80, 16: 0.40}),
                                             started_at=910.0, clock=clock)
    assert chosen is chain[0]
    assert sentences == [
        "At 0.80 s per training step, 750 steps and 150 of fine-tuning take about 17 minutes, "
        "within the budget of 20 minutes (about 2 minutes of it spent before the training)."
    ]
    chosen, sentences = choose_within_budget(chain, StepTimes({24: 0.80, 16: 0.40}),
                                             started_at=760.0, clock=clock)
    assert chosen is chain[1]
    assert "more than the budget of 20 minutes (about 4 minutes of it spent before the " \
        "training): the next configuration instead, with filters 16 rather than 24" in sentences[0]
    # Without a start, the budget counts from the choice: nothing is spent.
    assert choose_within_budget(chain, StepTimes({24: 0.80}))[0] is chain[0]


def test_the_time_spent_shortens_the_last_configuration_further():
    config = TrainConfig(time_budget_minutes=20)
    assert fit_to_budget(config, 1.2, spent_seconds=0) is config
    late = fit_to_budget(config, 1.2, spent_seconds=300)
    assert late.steps_per_epoch < config.steps_per_epoch
    assert 300 + estimate_seconds(late, 1.2) <= 20 * 60
    assert "the budget of 20 minutes (about 5 minutes of it spent before the training) " \
        "leaves" in describe_fit(config, late, 1.2, 300)
    assert "still" not in describe_fit(config, late, 1.2, 300)
    assert "still take" in describe_fit(config, fit_to_budget(config, 1.2, 1100), 1.2, 1100)


def deadline_steps(deadline, config, step_seconds, steps, first_step=10.0):
    """Runs `FineTuningDeadline` over `steps` steps of `step_seconds` (the first,
    which traces, `first_step`) and returns it."""
    clock = Clock()
    guard = FineTuningDeadline(deadline, config, clock=clock)
    guard.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    guard.model.stop_training = False
    for step in range(steps):
        clock.now += first_step if step == 0 else step_seconds
        guard.on_train_batch_end(step)
        if guard.model.stop_training:
            break
    return guard


def test_the_deadline_stops_the_fine_tuning_where_the_predictions_would_end_late():
    config = TrainConfig()  # TTA and the learned merging: 100 fine-tuning steps of predictions
    after = (90 + 65) / 1.55 + 1  # the predictions and the next step, in steps
    # 2 s a step after a first of 10 s: step k ends at 10 + 2k; it stops at the first
    # whose end leaves less than the predictions, one step and the scoring.
    guard = deadline_steps(400.0, config, 2.0, steps=150)
    last = 10 + 2 * (guard.stopped_after - 1)
    assert last + 2 * after + FIXED_SECONDS > 400 >= last - 2 + 2 * after + FIXED_SECONDS
    assert guard.stopped_after == 81
    # With time to spare it never stops, and it never stops on the first step alone.
    assert deadline_steps(10_000.0, config, 2.0, steps=150).stopped_after is None
    assert deadline_steps(0.0, config, 2.0, steps=1).stopped_after is None
    assert deadline_steps(0.0, config, 2.0, steps=150).stopped_after == 2
    # Without TTA the predictions take an eighth as long: more steps fit.
    assert deadline_steps(400.0, TrainConfig(tta=False), 2.0, steps=300).stopped_after > 150


def test_a_restart_is_the_configuration_it_started_as():
    wide, small = TrainConfig.for_bfloat16_cpu(time_budget_minutes=60), TrainConfig(
        time_budget_minutes=60
    )
    started = TrainConfig(time_budget_minutes=17, steps_per_epoch=39, malis_steps=117)
    restart = as_started([wide, small], started)
    assert (restart.filters, restart.steps_per_epoch, restart.malis_steps) == (16, 39, 117)
    assert restart.time_budget_minutes == 60  # the restart's own budget
    edited = dataclasses.replace(started, learning_rate=1e-3)  # a model neither asks for
    assert as_started([wide, small], edited) is None
    assert differences_from_request([wide, small], edited, restart=True) == [
        "filters 16 there, 32 asked", "learning_rate 0.001 there, 0.002 asked",
        "epochs 10 there, 20 asked", "mixed_precision 'auto' there, 'mixed_bfloat16' asked",
    ]


def bfloat16_chain(**overrides):
    overrides = {"time_budget_minutes": 20, **overrides}
    return [TrainConfig.from_preset(preset, **overrides)
            for preset in ("cpu-bf16", "cpu-bf16-24", "cpu")]


@pytest.mark.parametrize("harmless", [
    {}, {"workers": 4}, {"overlays": False}, {"data_dir": "/abs/data/isbi2012"},
    {"runs_dir": "./runs"}, {"tta": False, "ridges": False, "learned_merging": False},
    {"jit_compile": "off", "tensorboard": True}, {"time_budget_minutes": 0},
])
def test_a_restart_resumes_the_fallback_it_started_as_whatever_else_it_changes(harmless):
    """The 24-filter fallback, cut to 40 steps an epoch by the budget: a restart
    with options that do not change the trained model resumes it, steps and all,
    with the restart's own values of those options."""
    started = dataclasses.replace(bfloat16_chain()[1], steps_per_epoch=40, malis_steps=120)
    restart = as_started(bfloat16_chain(**harmless), started)
    assert restart == dataclasses.replace(started, **harmless)
    assert (restart.filters, restart.steps_per_epoch, restart.malis_steps) == (24, 40, 120)


def test_a_restart_may_end_without_more_fine_tuning_but_not_change_the_model():
    started = TrainConfig(malis_steps=30)
    assert as_started([TrainConfig(malis_steps=0)], started).malis_steps == 0
    assert as_started([TrainConfig(malis_steps=40)], started) is None  # without a budget
    assert differences_from_request([TrainConfig(malis_steps=40)], started, restart=True) == [
        "malis_steps 30 there, 40 asked"
    ]
    for changed in ({"filters": 8}, {"seed": 1}, {"loss": "dice"}, {"val_slices": (0, 1)}):
        asked = dataclasses.replace(started, **changed)
        assert as_started([asked], started) is None
        (difference,) = differences_from_request([asked], started, restart=True)
        assert difference.startswith(next(iter(changed)))


def test_presets_made_alike_by_overrides_are_told_apart_or_timed_once():
    """--filters 16 on the bfloat16 chain: each fallback sentence names what
    differs, not "the 16-filter configuration instead of the 16-filter one";
    with --epochs 10 --mixed-precision auto too, the three presets are one
    configuration, timed once."""
    times = StepTimes({16: 3.0})
    sentences = choose_within_budget(bfloat16_chain(filters=16), times)[1]
    assert times.timed == [16, 16, 16]
    assert sentences[0].endswith("the next configuration instead, with epochs 15 rather than 20.")
    assert sentences[1].endswith(
        "with epochs 10 rather than 15, mixed_precision 'auto' rather than 'mixed_bfloat16'."
    )
    times = StepTimes({16: 3.0})
    chosen, sentences = choose_within_budget(
        bfloat16_chain(filters=16, epochs=10, mixed_precision="auto"), times
    )
    assert times.timed == [16] and len(sentences) == 1 and "leaves" in sentences[0]
    assert chosen.steps_per_epoch < 50  # the last configuration, shortened


def test_a_negative_budget_is_refused():
    with pytest.raises(ValueError, match="time_budget_minutes"):
        TrainConfig(time_budget_minutes=-1)


@pytest.mark.backends
def test_time_training_step_times_a_real_step():
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(1, 3, padding="same")])
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).random((2, 16, 16, 1), dtype=np.float32)
    before = model.get_weights()[0].copy()
    seconds = time_training_step(model, (x, x), repeats=2)
    assert 0 < seconds < 5
    assert not np.array_equal(model.get_weights()[0], before)  # it trained: real steps


def test_a_finished_run_is_compared_with_the_request_up_to_its_budgeted_steps():
    asked = TrainConfig(time_budget_minutes=17)
    cut = dataclasses.replace(asked, steps_per_epoch=29, malis_steps=87)  # as the budget left it
    assert differences_from_request([asked], cut) == []
    wide = TrainConfig.for_bfloat16_cpu(time_budget_minutes=17)
    assert differences_from_request([wide, asked], cut) == []  # it was the fallback
    assert differences_from_request([TrainConfig()], cut) == [  # no budget: all the steps
        "steps_per_epoch 29 there, 50 asked", "malis_steps 87 there, 150 asked",
        "time_budget_minutes 17 there, 0.0 asked",
    ]
    assert differences_from_request([dataclasses.replace(asked, filters=32)], cut) == [
        "filters 16 there, 32 asked"
    ]
    # Where the run and its data are is no difference; what it predicts and scores is.
    moved = dataclasses.replace(asked, data_dir="/abs/data/isbi2012", runs_dir="./runs", workers=4)
    assert differences_from_request([moved], cut) == []
    assert differences_from_request([dataclasses.replace(asked, tta=False)], cut) == [
        "tta True there, False asked"
    ]
    whole = TrainConfig()  # without a budget the steps must match as well
    assert differences_from_request([whole], dataclasses.replace(whole, steps_per_epoch=49)) == [
        "steps_per_epoch 49 there, 50 asked"
    ]
