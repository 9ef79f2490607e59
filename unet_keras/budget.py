"""Fitting a run into a time budget: fewer steps on a slower machine.

`make train` promises its scores within 20 minutes on a 2-core CPU, but 2-core
machines differ: the same 500 steps of the default took 511 s of training on
one AVX2 machine and 774 s on another (docs/results.md, *A time budget for
slower machines*). With `TrainConfig.time_budget_minutes`, `train` times a few
training steps of its model before it starts and, where the run would not end
within the budget, shortens its epochs and its fine-tuning against merges by
the same factor.

The estimate counts every stage of `train` in units of the timed step. The
units were measured on the project's 2-core CPUs (AVX2 and AVX-512), for the
16- and 32-filter presets.

Machines with the same instructions differ too: a step of the 32-filter
bfloat16 preset took 0.60 s on one AVX-512 machine and 1.5 s on another. So
`train` can be given smaller configurations to fall back on
(`choose_within_budget`): it trains the first whose whole schedule fits, and
shortens only the last. A measured configuration is trained as measured, or
the next smaller one is.

The budget counts from the run's start (`make train` passes the moment it
began, so that the set-up counts too), and the estimate still errs by 10-20%
between machines. So the clock, not the estimate, ends the fine-tuning against
merges: `FineTuningDeadline` stops it early where the predictions after it
would not end in time. It is the last stage that trains, and the only one
whose length is still open once the epochs have run.

A restarted run is not timed again: it goes on as it started, steps included
(`as_started`), and a restart that asks for another model is refused
(`differences_from_request`).
"""

import dataclasses
import time

import keras
import numpy as np

FIT_STEP_COST = 1.15  # a step inside `fit`: with each epoch's validation and checkpoints
MERGE_STEP_COST = 1.55  # a fine-tuning step: a prediction, the merge weights, the step
PREDICT_COST = 90  # predicting the 5 held-out and 30 test slices with 8-fold TTA
MERGING_COST = 65  # predicting the 25 training slices, to fit the learned merging
FIXED_SECONDS = 30  # loading the data, building and tracing the models, scoring
SHORTEST = 0.5  # the smallest fraction of its steps a budget leaves a run

# Fields that say where a run and its data are, or how its steps are computed, not
# what is trained or written: configurations that differ only in them ask for the same
# run (a finished one is kept, an unfinished one resumed).
OPERATIONAL_FIELDS = ("name", "runs_dir", "data_dir", "data_url", "workers", "jit_compile",
                      "tensorboard")
# What a restart may change besides: the budget bounds only the run's length (the
# steps stay those it started with), and the rest acts after the training, on what
# is predicted, scored and written. A finished run asked for with other values of these
# is refused: its saved scores and files are not those asked for.
RESTART_FIELDS = (*OPERATIONAL_FIELDS, "time_budget_minutes", "tta", "ridges",
                  "learned_merging", "overlays")


def time_training_step(model, batch, repeats=3):
    """Seconds of one `train_on_batch` step of a compiled model.

    The first step, which traces the step function, is not counted.

    Args:
        model: A compiled Keras model. Its weights change: time a copy.
        batch: `(x, y)` or `(x, y, sample_weight)`, as a `PyDataset` gives it.
        repeats: The number of timed steps.

    Returns:
        The median of the timed steps, in seconds.
    """
    model.train_on_batch(*batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.train_on_batch(*batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _prediction_units(config):
    """The predictions after the training, in training steps."""
    units = PREDICT_COST + (MERGING_COST if config.learned_merging else 0)
    return units if config.tta else units / 8


def estimate_seconds(config, step_seconds):
    """The estimated wall time of `train(config)`, set-up excluded.

    Args:
        config: A `TrainConfig`.
        step_seconds: Seconds of one training step (`time_training_step`).

    Returns:
        The estimate in seconds.
    """
    return sum(_stage_seconds(config, step_seconds))


def _stage_seconds(config, step_seconds):
    """The estimate in two parts: what a budget cannot shorten (the fixed costs
    and the prediction), and the steps it can."""
    predict = _prediction_units(config)
    steps = (FIT_STEP_COST * config.epochs * config.steps_per_epoch
             + MERGE_STEP_COST * config.malis_steps)
    return FIXED_SECONDS + step_seconds * predict, step_seconds * steps


def fit_to_budget(config, step_seconds, spent_seconds=0.0):
    """The config with as many of its steps as fit what is left of its time budget.

    The steps of every epoch and of the fine-tuning are shortened by one
    factor, and never below `SHORTEST` of them: a run that would need fewer
    is shortened that far and overruns its budget (`estimate_seconds` of the
    result says by how much).

    Args:
        config: A `TrainConfig`; `time_budget_minutes=0` means no budget.
        step_seconds: Seconds of one training step (`time_training_step`).
        spent_seconds: Seconds of the budget spent before the run (the set-up).

    Returns:
        `config` itself if it fits, else a copy with fewer `steps_per_epoch`
        and `malis_steps`.
    """
    budget = 60 * config.time_budget_minutes - spent_seconds
    fixed, steps = _stage_seconds(config, step_seconds)
    if not config.time_budget_minutes or fixed + steps <= budget:
        return config
    scale = max(SHORTEST, (budget - fixed) / steps)
    return dataclasses.replace(
        config,
        steps_per_epoch=max(1, int(config.steps_per_epoch * scale)),
        malis_steps=int(config.malis_steps * scale),
    )


def describe_fit(requested, fitted, step_seconds, spent_seconds=0.0):
    """A sentence on what `fit_to_budget` did, for the run's log.

    Args:
        requested: The config before `fit_to_budget`.
        fitted: Its result.
        step_seconds: The timed step.
        spent_seconds: As for `fit_to_budget`.

    Returns:
        The sentence.
    """
    budget = _budget(requested, spent_seconds)
    head = _head(requested, step_seconds)
    if fitted is requested:
        return f"{head}, within the budget of {budget}."
    text = f"{head}; the budget of {budget} leaves {_steps(fitted)}"
    over = spent_seconds + estimate_seconds(fitted, step_seconds)
    if over > 60 * requested.time_budget_minutes:
        text += f", which still take {_minutes(over)}"
    return text + " (--time-budget-minutes 0 trains them all)."


def choose_within_budget(candidates, time_step, started_at=None, clock=time.time):
    """The first configuration whose whole schedule fits what is left of its
    time budget.

    Args:
        candidates: `TrainConfig`s, the preferred (largest) first, each with
            its `time_budget_minutes`.
        time_step: A function of a config that returns the seconds of one of
            its training steps, e.g. `time_training_step` of a throwaway model.
            It is called for each candidate tried, in order.
        started_at: When the budget began, as `clock()` gives it (`make train`
            passes its own start); None: now. The time since then, the timing
            of the candidates included, is spent.
        clock: The time in seconds, `time.time`.

    Returns:
        `(config, sentences)`: the first candidate that fits unchanged or, if
        none does, the last one as `fit_to_budget` shortens it; and a
        sentence for each candidate timed, for the run's log.

    Raises:
        ValueError: For no candidates.
    """
    if not candidates:
        raise ValueError("`candidates` must hold at least one TrainConfig.")
    # Overrides can make presets alike (--filters 16 on the bfloat16 chain): time each once.
    candidates = [c for i, c in enumerate(candidates) if c not in candidates[:i]]
    started_at = clock() if started_at is None else started_at
    sentences = []
    for config, smaller in zip(candidates, [*candidates[1:], None]):
        step_seconds = time_step(config)
        spent = clock() - started_at
        fitted = fit_to_budget(config, step_seconds, spent)
        if fitted is config or smaller is None:
            sentences.append(describe_fit(config, fitted, step_seconds, spent))
            return fitted, sentences
        sentences.append(
            f"{_head(config, step_seconds)}, more than the budget of {_budget(config, spent)}: "
            f"the next configuration instead, with {_changes(config, smaller)}."
        )


class FineTuningDeadline(keras.callbacks.Callback):
    """Stops the fine-tuning against merges where the run would end past its
    deadline.

    After each step it takes the median of the steps so far (the first, which
    traces the step, is not counted) and stops the fine-tuning if one more step
    and the predictions after it would end later than `deadline`. The
    predictions count as many fine-tuning steps as the budget's estimate gives
    them (`PREDICT_COST`, `MERGING_COST` over `MERGE_STEP_COST`), and
    `FIXED_SECONDS` more for the scoring. So a machine slower than its
    estimate loses steps of the fine-tuning rather than overrun the budget.

    Args:
        deadline: When the run should end, as `clock()` gives it.
        config: The run's `TrainConfig` (its test-time augmentation and
            learned merging make the predictions longer).
        clock: The time in seconds, `time.time`.

    Attributes:
        stopped_after: The steps done when it stopped the fine-tuning; None
            while it has not.
    """

    def __init__(self, deadline, config, clock=time.time):
        super().__init__()
        self.deadline, self.clock = deadline, clock
        self.predictions = _prediction_units(config) / MERGE_STEP_COST
        self.stopped_after, self._times = None, []

    def on_train_batch_end(self, batch, logs=None):
        self._times.append(self.clock())
        if len(self._times) < 2:  # the first step traces: time from the second on
            return
        step = float(np.median(np.diff(self._times)))
        if self._times[-1] + step * (1 + self.predictions) + FIXED_SECONDS > self.deadline:
            self.model.stop_training = True
            self.stopped_after = batch + 1


def as_started(candidates, started):
    """The configuration that a restarted run goes on with.

    A restart must not time its step again: on a busy machine it could pick
    another candidate, or other steps, than the backup was trained with. So it
    resumes `started` itself, steps included, with the restart's own values of
    `RESTART_FIELDS` only (they do not change the trained model), and
    `malis_steps=0` where the restart asks for it (it ends the run without
    more fine-tuning, keeping the epochs' model).

    Args:
        candidates: The `TrainConfig`s the restart was given, as for
            `choose_within_budget`.
        started: The `TrainConfig` the run started with (its `config.json`).

    Returns:
        `started` as the first candidate that asks for it changes it, or None
        where none does (`differences_from_request(..., restart=True)` says
        how they differ).
    """
    for candidate in candidates:
        kept, asked = _compared(candidate, started, restart=True)
        if kept == asked:
            return kept
    return None


def differences_from_request(candidates, started, restart=False):
    """How a run's configuration differs from the one a new call asks for.

    A run trained under a time budget may have fewer steps than asked for, so
    the steps count as the same where the request has a budget, and, for a
    restart, where the run had one. `OPERATIONAL_FIELDS` never count; for a
    restart, none of `RESTART_FIELDS` does.

    Args:
        candidates: The `TrainConfig`s the call was given, as for
            `choose_within_budget`.
        started: The `TrainConfig` of the run (its `config.json`).
        restart: Whether the run is unfinished, and the call would resume it
            (`as_started`); else it is finished, and the call would keep it.

    Returns:
        An empty list if one of the candidates asks for `started`, else one
        string per field in which the first candidate differs, e.g.
        `"filters 16 there, 32 asked"`.
    """
    pairs = [_compared(candidate, started, restart) for candidate in candidates]
    if any(kept == asked for kept, asked in pairs):
        return []
    kept, asked = pairs[0]
    return [
        f"{f.name} {getattr(kept, f.name)!r} there, {getattr(asked, f.name)!r} asked"
        for f in dataclasses.fields(kept) if getattr(kept, f.name) != getattr(asked, f.name)
    ]


def _compared(candidate, started, restart):
    """`(kept, asked)`: `started` with what `candidate` may change of it, and
    `candidate` without what it cannot ask of it. They are equal where
    `candidate` asks for the run of `started`; `kept` is then that run."""
    may_change = RESTART_FIELDS if restart else OPERATIONAL_FIELDS
    kept = dataclasses.replace(started, **{name: getattr(candidate, name) for name in may_change})
    asked = candidate
    if candidate.time_budget_minutes or (restart and started.time_budget_minutes):
        asked = dataclasses.replace(
            asked, steps_per_epoch=started.steps_per_epoch, malis_steps=started.malis_steps
        )
    if restart and candidate.malis_steps == 0:
        kept = dataclasses.replace(kept, malis_steps=0)
        asked = dataclasses.replace(asked, malis_steps=0)
    return kept, asked


def _steps(config):
    return f"{config.epochs * config.steps_per_epoch} steps and {config.malis_steps} of fine-tuning"


def _head(config, step_seconds):
    return (f"At {step_seconds:.2f} s per training step, {_steps(config)} take "
            f"{_minutes(estimate_seconds(config, step_seconds))}")


def _budget(config, spent_seconds):
    """`"20 minutes"`, with the part spent before the training if any."""
    return f"{config.time_budget_minutes:g} minutes{_spent(spent_seconds)}"


def _changes(config, smaller):
    """`"filters 24 rather than 32, epochs 15 rather than 20"`: the fields in which
    the configuration fallen back on differs, by name, since overrides can make
    presets alike in any of them."""
    return ", ".join(
        f"{f.name} {getattr(smaller, f.name)!r} rather than {getattr(config, f.name)!r}"
        for f in dataclasses.fields(config) if getattr(smaller, f.name) != getattr(config, f.name)
    )


def _spent(seconds):
    """`" (about 2 minutes of it spent before the training)"`, or nothing."""
    return f" ({_minutes(seconds)} of it spent before the training)" if seconds >= 30 else ""


def _minutes(seconds):
    if seconds < 60:
        return "less than a minute"
    minutes = round(seconds / 60)
    return f"about {minutes} minute{'s' if minutes > 1 else ''}"
