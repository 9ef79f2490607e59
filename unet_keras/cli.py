"""Command line: `python -m unet_keras {download,train,predict,evaluate}`."""

import argparse
import dataclasses
import inspect
import json
import sys
from pathlib import Path

from unet_keras.cli_io import (
    LUMINANCE,
    POSITIVE_LABELS,
    input_channels,
    load_model,
    membrane_channel,
    polarity_warning,
    read_images,
    select_label_slices,
)
from unet_keras.datasets import DownloadError
from unet_keras.io import membrane_mask_from_labels, read_stack, write_stack
from unet_keras.postprocess import _check_parameters, ridge_membranes, watershed_membranes
from unet_keras.tensorflow_env import FrozenWeightsError

# The options --marker-threshold, ... and their defaults, read from the function
# so that the help text cannot drift from the code.
_WATERSHED_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(watershed_membranes).parameters.items()
    if name not in ("membrane_prob", "ridges")
}


def _add_config_arguments(parser):
    """One option per `TrainConfig` field, with its choices and its default."""
    from unet_keras.config import CHOICES, FIELD_HELP, PRESETS, TrainConfig

    presets = {preset: TrainConfig.from_preset(preset) for preset in PRESETS}
    for f in dataclasses.fields(TrainConfig):
        option = "--" + f.name.replace("_", "-")
        text = FIELD_HELP.get(f.name, f.name.replace("_", " "))
        if f.name != "data_url":
            text += f" ({_default_text(f.name, presets)})"
        text = text.replace("%", "%%")  # argparse formats help with %
        if f.type is bool or isinstance(f.default, bool):
            parser.add_argument(option, action=argparse.BooleanOptionalAction, help=text)
        elif f.name == "val_slices":
            parser.add_argument(option, type=int, nargs="+", metavar="I", help=text)
        elif f.name == "zoom_range":
            parser.add_argument(option, type=float, nargs=2, metavar=("LOWER", "UPPER"),
                                help=text)
        else:
            kind = type(f.default) if f.default is not None else str
            choices = CHOICES.get(f.name)  # listed as {a,b} by argparse, without a metavar
            parser.add_argument(option, type=kind, default=None, choices=choices, help=text,
                                metavar=None if choices else f.name.upper())


def _default_text(name, presets):
    """`"default 16"`: the cpu preset's, and those of the presets that differ."""
    shown = {preset: _shown(getattr(config, name)) for preset, config in presets.items()}
    default = shown.pop("cpu")
    others = ", ".join(f"{p} {v}" for p, v in shown.items() if v != default)
    return f"default {default}" + (f"; --preset {others}" if others else "")


def _shown(value):
    """A default as it is typed on the command line."""
    if isinstance(value, bool):
        return "on" if value else "off"
    values = value if isinstance(value, tuple) else (value,)
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _train(args):
    from unet_keras.config import PRESETS
    from unet_keras.train import TrainConfig, train

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name) is not None
    }
    presets = ()  # read from a file: no presets to fall back on
    if args.config:
        config = TrainConfig.from_file(args.config, **overrides)
    else:
        presets = (args.preset,)
        if args.preset == "auto":
            presets = TrainConfig.machine_presets()
            if args.verbose:
                others = _either([p for p in PRESETS if p != presets[0]])
                smaller = (f"; the {_either(presets[1:])} preset if it does not fit "
                           "the time budget"
                           if len(presets) > 1 and overrides.get("time_budget_minutes") else "")
                print(f"The {presets[0]} preset, picked for this machine{smaller} "
                      f"(--preset {others} to choose another).")
        config = TrainConfig.from_preset(presets[0], **overrides)
    fallbacks = [TrainConfig.from_preset(p, **overrides) for p in presets[1:]]
    try:
        train(config, verbose=args.verbose, fallbacks=fallbacks, started_at=args.started_at)
    except KeyboardInterrupt:
        # A Ctrl-C loses at most the current epoch (or 25 steps of the fine-tuning):
        # say so, instead of a traceback that looks like a crash.
        print(f"\nInterrupted. {config.run_dir} keeps the finished epochs: run the same "
              "command again to resume the run where it stopped.", file=sys.stderr)
        return 130


def _either(names):
    """The names as prose: `a`, `a or b`, `a, b or c`."""
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _add_watershed_arguments(parser, help, closers="--watershed"):
    """`--watershed` and its parameters, with `watershed_membranes`'s defaults;
    `closers` names the command's options that draw lines over the ridges."""
    parser.add_argument("--watershed", action="store_true", help=help)
    parser.add_argument(
        "--ridges", action=argparse.BooleanOptionalAction, default=None,
        help="redraw each boundary one pixel wide on its probability ridge (the default "
             f"under the lines of {closers}; off otherwise)",
    )
    group = parser.add_argument_group("watershed parameters (with --watershed)")
    helps = {
        "marker_threshold": ("P", "seeds: membrane probability below this"),
        "min_marker_size": ("PIXELS", "seeds with fewer pixels are dropped"),
        "merge_threshold": ("P", "merge cells whose shared boundary has a lower mean "
                                 "probability; 0: off"),
    }
    for name, (metavar, text) in helps.items():
        default = _WATERSHED_DEFAULTS[name]
        group.add_argument("--" + name.replace("_", "-"), type=type(default), default=None,
                           metavar=metavar, help=f"{text} (default {default})")


def _watershed_options(args):
    """The watershed parameters given on the command line, checked before any
    slow work; refused without --watershed."""
    given = {name: getattr(args, name) for name in _WATERSHED_DEFAULTS
             if getattr(args, name) is not None}
    if given and not args.watershed:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(
            f"{options} given without --watershed: add --watershed to close the gaps "
            "with these parameters."
        )
    _check_parameters(**{**_WATERSHED_DEFAULTS, **given})
    return given


def _close_gaps(membrane, args, watershed_options):
    """The map after --watershed and --ridges (the watershed draws over the ridges
    unless --no-ridges)."""
    if args.watershed:
        return watershed_membranes(
            membrane, ridges=args.ridges is not False, **watershed_options
        )
    return ridge_membranes(membrane) if args.ridges else membrane


def _download(args):
    from unet_keras.datasets import download_isbi2012

    _check_place(args.dest, "--dest", folder=True)
    print(f"ISBI 2012 data in {download_isbi2012(args.dest, base_url=args.base_url)}")


def _check_place(path, option, folder):
    """Refuses a path that cannot be written as a folder (`folder`) or a file,
    before any slow work: one that is the other kind, or lies under a file."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        wanted = "a folder to write into" if folder else f"a file, e.g. {path / 'membrane.tif'}"
        raise ValueError(f"{option} {path} is a {'file' if folder else 'folder'}: give {wanted}.")
    above = next(p for p in path.absolute().parents if p.exists())
    if not above.is_dir():
        raise ValueError(f"{option} {path} lies under {above}, which is a file, not a folder.")


def _predict(args):
    from unet_keras.family import prediction_network
    from unet_keras.folding import fold_batch_norm
    from unet_keras.inference import predict_tiled
    from unet_keras.plots import save_overlays

    watershed_options = _watershed_options(args)
    _check_place(args.output, "--output", folder=False)  # before the slow part
    if args.overlays:
        _check_place(args.overlays, "--overlays", folder=True)
    classifier = None
    if args.merge_classifier:
        if args.watershed:
            raise ValueError(
                "--merge-classifier and --watershed both close the gaps between cells: "
                "give one of them."
            )
        from unet_keras.agglomeration import MergeClassifier

        classifier = MergeClassifier.load(args.merge_classifier)  # before the slow part
    # A U-Net++ or UNet 3+ without its side outputs.
    model = prediction_network(load_model(args.model))
    channel = membrane_channel(model, args.model)  # refused before the slow part
    channels = input_channels(model, args.model)
    try:
        model = fold_batch_norm(model)  # the same maps, computed faster
    except ValueError:  # not a functional model: predict with it as it is
        pass
    images, names = read_images(args.input, channels)
    membrane = predict_tiled(
        model, images, tile=args.tile, batch_size=args.batch_size, tta=args.tta
    )[..., channel]
    gray = images[..., 0] if channels == 1 else images @ LUMINANCE  # overlays, merging
    if classifier is not None:  # refused above together with --watershed
        from unet_keras.agglomeration import agglomerate_membranes

        membrane = agglomerate_membranes(
            membrane, gray, classifier, ridges=args.ridges is not False
        )
    else:
        membrane = _close_gaps(membrane, args, watershed_options)
    # The challenge expects the probability of cell interior, 1 - membrane.
    written = write_stack(args.output, 1.0 - membrane if args.isbi_submission else membrane)
    source = ", from class 1 of the model's 2 output channels" if channel else ""
    print(f"Wrote {written} ({len(membrane)} slices, "
          f"{'interior' if args.isbi_submission else 'membrane'} probabilities{source}).")
    if args.overlays:
        save_overlays(args.overlays, gray, membrane, names=names)
        print(f"Wrote overlays to {args.overlays}/")


def _costliest_errors(prob, mask, threshold, count, slices=None):
    """Each slice's `count` costliest merges and splits, one dict each, with
    the slice named as in the labels (`slices`, from --label-slices)."""
    from unet_keras.errors import segmentation_errors

    rows = []
    slices = range(len(prob)) if slices is None else slices
    for index, slice_prob, slice_mask in zip(slices, prob, mask):
        errors = segmentation_errors(slice_prob, slice_mask, threshold=threshold)
        for error in errors.costliest(count):
            rows.append({
                "slice": index, "kind": error.kind,
                "centroid": [round(c) for c in error.centroid],
                "pieces": list(error.parts[:4]),
                "v_rand_if_repaired": round(errors.v_rand + error.gain, 4),
            })
    return rows


def _print_json(scores):
    """JSON with each per-slice list on one line (30 slices stay readable), and
    a list of dicts one dict a line."""
    fields = []
    for key, value in scores.items():
        if value and isinstance(value, list) and isinstance(value[0], dict):
            rows = ",\n".join(f"    {json.dumps(row)}" for row in value)
            fields.append(f"  {json.dumps(key)}: [\n{rows}\n  ]")
        else:
            fields.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    print("{\n" + ",\n".join(fields) + "\n}")


def _evaluate(args):
    from unet_keras.evaluate import score_isbi

    if args.errors is not None and args.errors < 1:
        raise ValueError(f"--errors must be at least 1, got {args.errors}.")
    watershed_options = _watershed_options(args)
    prob = read_stack(args.prediction).astype("float32")
    # The labels first: a mismatch is found before the slow watershed, not after it.
    labels = select_label_slices(read_stack(args.labels), args.label_slices, len(prob))
    mask = membrane_mask_from_labels(
        labels, source=str(args.labels), positive_label=args.positive_label or 0
    )
    warning = polarity_warning(labels) if args.positive_label is None else None
    if warning:  # labels mostly 0, read as ISBI's: likely masks that mark their foreground 255
        print(warning, file=sys.stderr)
    if args.isbi_submission:
        prob = 1.0 - prob
    prob = _close_gaps(prob, args, watershed_options)
    scores = score_isbi(prob, mask)
    for curve in ("thresholds", "v_rand_curve", "v_info_curve"):
        del scores[curve]
    if args.errors:
        scores["costliest_errors"] = _costliest_errors(
            prob, mask, scores["v_rand_threshold"], args.errors, args.label_slices
        )
    _print_json(scores)


def make_parser():
    from unet_keras.config import PRESETS  # loads Keras, which the train defaults need anyway

    parser = argparse.ArgumentParser(
        prog="python -m unet_keras",
        description="U-Net for ISBI 2012 EM segmentation: download, train, predict, evaluate.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("download", help="download and verify the ISBI 2012 data")
    p.add_argument("--dest", default="data/isbi2012",
                   help="the folder to download into (default data/isbi2012)")
    p.add_argument("--base-url", default=None,
                   help="mirror base URL (default: $UNET_KERAS_DATA_URL or the public source)")
    p.set_defaults(run=_download)

    p = commands.add_parser("train", help="train on ISBI 2012, predict and score (a run folder)")
    p.add_argument("--preset", choices=("auto", *PRESETS), default="auto",
                   help="the default configuration for a CPU, a CPU that computes in "
                        "bfloat16 (cpu-bf16-24: for a slower one), or a GPU (default "
                        "auto: by the machine)")
    p.add_argument("--config", metavar="JSON",
                   help="a config.json of an earlier run to start from, instead of --preset; "
                        "the options below override its values")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="0: silent, train's own messages too; 1: a progress bar; 2: one "
                        "line per epoch (default 1)")
    p.add_argument("--started-at", type=float, default=None, metavar="SECONDS",
                   help="the Unix time the --time-budget-minutes count from (default: now; "
                        "make train passes its own start, so that the set-up counts)")
    _add_config_arguments(p)
    p.set_defaults(run=_train)

    p = commands.add_parser("predict", help="segment a folder of images, a TIFF stack or one image")
    p.add_argument("--model", required=True,
                   help="a .keras model, e.g. runs/default/model.keras: one output channel "
                        "(sigmoid), or two (a 2-class softmax, whose class 1 is membrane)")
    p.add_argument("--input", required=True,
                   help="a folder of images, a TIFF stack or one image: gray for a model of "
                        "one input channel; for one of three, colour images, given to it in "
                        "RGB order (gray ones as three equal channels)")
    p.add_argument("--output", required=True,
                   help="the float32 TIFF stack of membrane probabilities to write: the "
                        "model's one output channel, or class 1 of a 2-class softmax")
    p.add_argument("--overlays", help="a folder for PNG overlays, named after the input's "
                                      "files (a TIFF stack's: 00, 01, ...)")
    p.add_argument("--tile", type=int, default=None, help="input tile size (default: automatic)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles a step (default 4)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="average over the 8 flips and rotations")
    p.add_argument("--isbi-submission", action="store_true",
                   help="write interior probabilities (1 - membrane), the challenge's convention")
    _add_watershed_arguments(p, "close the gaps between cells with a seeded watershed",
                             "--watershed and --merge-classifier")
    p.add_argument("--merge-classifier", metavar="JSON",
                   help="close the gaps with the watershed and a run's learned merging "
                        "instead, e.g. runs/default/merge_classifier.json")
    p.set_defaults(run=_predict)

    p = commands.add_parser("evaluate", help="ISBI 2012 scores (V_rand, V_info) of a prediction")
    p.add_argument("--prediction", required=True,
                   help="TIFF stack of membrane probabilities (of the --positive-label class)")
    p.add_argument("--labels", required=True,
                   help="folder or TIFF stack of binary labels, 0 and 255 (ISBI 2012's: "
                        "0 = membrane, 255 = interior)")
    p.add_argument("--positive-label", type=int, choices=POSITIVE_LABELS, default=None,
                   help="the label value of the class the prediction's probabilities are "
                        "for: ISBI 2012 labels mark membranes 0 (default 0); masks that mark "
                        "their foreground white need 255")
    p.add_argument("--label-slices", type=int, nargs="+", default=None, metavar="I",
                   help="the slices of --labels that the prediction holds, in its order "
                        "(a run's val.tif: its val_slices, e.g. 25 26 27 28 29)")
    p.add_argument("--isbi-submission", action="store_true",
                   help="the prediction holds interior probabilities (1 - membrane), as "
                        "predict --isbi-submission writes them")
    p.add_argument("--errors", type=int, default=None, metavar="K",
                   help="also list each slice's K costliest merges and splits at the best "
                        "V_rand threshold, with the V_rand that repairing each would give")
    _add_watershed_arguments(p, "score after closing the gaps with a seeded watershed")
    p.set_defaults(run=_evaluate)
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (OSError, ValueError, DownloadError, FrozenWeightsError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2


def _one_line(error):
    """The message of `error` on one line; an OSError of the system as
    `path: reason` rather than `[Errno 21] Is a directory: 'path'`."""
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split())
