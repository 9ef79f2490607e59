"""`TrainConfig`: everything that defines a training run, shared by the CLI,
the notebooks and the Python API, and saved as `config.json` in the run folder.
"""

import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

from unet_keras.augment import zoom_bounds
from unet_keras.backend_utils import computes_bfloat16_on_cpu, detect_device
from unet_keras.geometry import is_integer, valid_output_size
from unet_keras.malis import MERGE_LEARNING_RATE, MERGE_WEIGHT
from unet_keras.model import PADDINGS, UPSAMPLINGS

ARCHITECTURES = ("unet", "unet++", "unet3+")
LOSSES = ("bce", "dice", "bce_dice", "bce_cldice", "weighted_ce")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
# TrainConfig(), .for_bfloat16_cpu(), .for_slower_bfloat16_cpu(), .for_gpu()
PRESETS = ("cpu", "cpu-bf16", "cpu-bf16-24", "gpu")
# What backend_utils.choose_precision accepts.
PRECISIONS = ("auto", "off", "float32", "mixed_float16", "mixed_bfloat16")
JIT_COMPILE = ("auto", "on", "off")
ISBI_SLICES = 30  # the labelled ISBI 2012 stack, whose slices val_slices names (0-29)

# The fields with a fixed set of values, those that are whole numbers (with their
# least value), and the other numbers: (lowest, whether it is allowed, the bound
# above it or None, what the number is).
CHOICES = {
    "architecture": ARCHITECTURES, "padding": PADDINGS, "upsampling": UPSAMPLINGS,
    "loss": LOSSES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
    "mixed_precision": PRECISIONS, "jit_compile": JIT_COMPILE,
}
INTEGERS = {
    "filters": 1, "depth": 1, "tile_size": 1, "batch_size": 1, "epochs": 1,
    "steps_per_epoch": 1, "workers": 1, "malis_steps": 0,
}
NUMBERS = {
    "dropout": (0.0, True, 1.0, "the fraction of units dropped; 0 = off"),
    "learning_rate": (0.0, False, None, "e.g. 2e-3"),
    "weight_decay": (0.0, True, None, "0 = AdamW's 1e-4"),
    "ema": (0.0, True, 1.0, "the momentum of the weight average; 0 = off, typical 0.99"),
    "w0": (0.0, True, None, "the border weight of loss='weighted_ce'; the paper's 10"),
    "sigma": (0.0, False, None, "the border width in pixels of loss='weighted_ce'; 5"),
    "malis_weight": (0.0, True, None, "the weight of the merges in the fine-tuning"),
    "malis_learning_rate": (0.0, True, None, "the fine-tuning's learning rate"),
    "time_budget_minutes": (0.0, True, None, "0 = no limit"),
}


# The help of `train`'s options for the fields whose names say too little (cli.py adds
# each default), kept beside the fields so that it cannot drift from them.
FIELD_HELP = {
    "name": "the run folder's name, inside --runs-dir",
    "runs_dir": "the folder of the run folders",
    "data_dir": "the folder of the ISBI 2012 data, downloaded there if missing",
    "data_url": "the data's mirror (default: $UNET_KERAS_DATA_URL, else the public source)",
    "filters": "channels of the first level, doubled at each level below",
    "depth": "the network's 2x2 poolings",
    "batch_norm": "BatchNorm after each convolution",
    "dropout": "dropout at the end of the contracting path",
    "residual": "residual convolution blocks",
    "weight_decay": "AdamW's weight decay; 0 gives 1e-4 with --optimizer adamw",
    "ema": "momentum of an average of the weights, in [0, 1); 0: off",
    "w0": "border weight of --loss weighted_ce",
    "sigma": "border width in pixels of --loss weighted_ce",
    "elastic": "random elastic deformations",
    "symmetries": "random flips and quarter turns",
    "affine": "random small rotations and shifts",
    "zoom_range": "random zoom bounds, > 0 zooms out; with --affine",
    "gray": "random brightness, contrast and gamma",
    "val_slices": "the held-out slices of the 30 (0-29), that pick the best epoch and score it",
    "workers": "threads that build the training batches",
    "malis_steps": "steps of fine-tuning against merges after the epochs; 0: off",
    "malis_weight": "weight of the merges in that fine-tuning",
    "malis_learning_rate": "learning rate of that fine-tuning",
    "time_budget_minutes": "minutes for the whole run, in which a slower machine trains "
                           "fewer steps; 0: no limit",
    "mixed_precision": "precision policy; auto: mixed on GPUs, float32 on CPUs",
    "jit_compile": "XLA compilation; auto: with JAX, and with TensorFlow on a GPU",
    "tta": "average the scored predictions over the 8 flips and rotations",
    "learned_merging": "also merge the watershed's regions with a classifier fitted on the "
                       "training slices",
    "ridges": "also redraw the boundaries on their ridges",
    "reduce_lr_on_plateau": "halve the learning rate when the held-out Dice stalls",
    "tensorboard": "write TensorBoard logs to the run folder's logs/",
    "overlays": "write the held-out predictions over their images as PNGs",
}


def _checked_val_slices(val_slices):
    """`val_slices` as a tuple of ints, each a slice of the ISBI stack, once."""
    try:
        values = () if isinstance(val_slices, (str, bytes)) else tuple(val_slices)
    except TypeError:  # a single number
        values = ()
    wrong = [i for i in values if not is_integer(i) or not 0 <= i < ISBI_SLICES]
    repeated = sorted({i for i in values if values.count(i) > 1})
    if not values:
        problem = f"is {val_slices!r}"
    elif wrong:
        problem = f"holds {', '.join(map(repr, wrong))}"
    elif repeated:
        problem = f"repeats {', '.join(map(str, repeated))}"
    elif len(values) == ISBI_SLICES:
        problem = "holds every slice, which leaves none to train on"
    else:
        return tuple(int(i) for i in values)
    raise ValueError(
        f"`val_slices` {problem}: it must name at least one held-out slice of the "
        f"{ISBI_SLICES}-slice ISBI stack, each once, as indices 0 to {ISBI_SLICES - 1}, and "
        "leave the others to train on; e.g. (25, 26, 27, 28, 29), the default. The best "
        "model is chosen, and the run scored, on them."
    )


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    The defaults are the CPU configuration of `make train`, chosen by
    measurement on a 2-core machine (see docs/results.md);
    `TrainConfig.for_bfloat16_cpu()` is a wider one for CPUs that compute in
    bfloat16 and `TrainConfig.for_slower_bfloat16_cpu()` a step between the
    two, `TrainConfig.for_gpu()` the larger GPU configuration, and
    `TrainConfig.auto()` picks one of them for the machine.
    """

    name: str = "default"
    runs_dir: str = "runs"
    data_dir: str = "data/isbi2012"
    data_url: str | None = None  # None: UNET_KERAS_DATA_URL or the public source
    # Model.
    architecture: str = "unet"  # or "unet++", "unet3+": deeply supervised (family.py)
    filters: int = 16
    depth: int = 4
    batch_norm: bool = True
    dropout: float = 0.0
    padding: str = "same"
    upsampling: str = "transpose"
    residual: bool = False  # residual conv blocks, He et al. 2016 (model.conv_block)
    # Objective and optimiser.
    loss: str = "bce_dice"
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    schedule: str = "cosine"
    weight_decay: float = 0.0
    ema: float = 0.0  # momentum of an exponential moving average of the weights; 0 = off
    w0: float = 10.0  # border weight map, for loss="weighted_ce"
    sigma: float = 5.0
    # Data and augmentation.
    tile_size: int = 256
    batch_size: int = 4
    epochs: int = 10
    steps_per_epoch: int = 50
    elastic: bool = True
    symmetries: bool = True
    affine: bool = True
    zoom_range: tuple = (0.0, 0.0)  # with affine; as keras.layers.RandomZoom: > 0 zooms out
    gray: bool = True
    val_slices: tuple = (25, 26, 27, 28, 29)
    workers: int = 2  # threads that build batches; see TileDataset
    seed: int = 0
    # Fine-tuning against merges after the epochs (malis.py): constrained MALIS. With
    # loss="weighted_ce" it fine-tunes on the plain cross-entropy: merge weights, not
    # border weights.
    malis_steps: int = 150  # 0: off
    malis_weight: float = MERGE_WEIGHT
    malis_learning_rate: float = MERGE_LEARNING_RATE
    # Minutes for the whole `train` call (0: no limit). A slower machine trains fewer
    # steps of every epoch and of the fine-tuning to end in time (budget.py).
    time_budget_minutes: float = 0.0
    # Hardware.
    mixed_precision: str = "auto"
    jit_compile: str = "auto"  # "auto" (XLA: JAX always, TensorFlow on GPUs), "on" or "off"
    # Evaluation and callbacks.
    tta: bool = True
    # Merge the watershed's regions by a classifier fitted on the network's maps of its
    # training slices (agglomeration.py): predictions/*_agglomerated.tif.
    learned_merging: bool = True
    # Redraw the boundaries on the membranes' ridges (postprocess.ridge_membranes):
    # predictions/*_ridges.tif, and the watershed's and merging's lines drawn over them.
    # About 0.3 s a slice; False keeps the network's map under their lines.
    ridges: bool = True
    reduce_lr_on_plateau: bool = False
    tensorboard: bool = False
    overlays: bool = True

    def __post_init__(self):
        """Checks every field at construction, so that a bad value fails before the
        download, the data and the run folder, with what would work."""
        self._check_name()
        self.val_slices = _checked_val_slices(self.val_slices)
        self.zoom_range = zoom_bounds(self.zoom_range, self.affine)
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"`{name}` must be one of {', '.join(map(repr, choices))}; "
                    f"got {getattr(self, name)!r}."
                )
        for name, least in INTEGERS.items():
            value = getattr(self, name)
            if not is_integer(value) or value < least:
                raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}.")
        self._check_numbers()
        if self.architecture != "unet":
            self._check_family_options()
        if self.padding == "valid":
            valid_output_size(self.tile_size, self.depth)  # raises with sizes that work
        elif self.tile_size % 2**self.depth:
            raise ValueError(
                f"`tile_size` must be divisible by 2**depth = {2**self.depth} for "
                f"padding='same', got {self.tile_size}."
            )

    def _check_name(self):
        """The run folder is `runs_dir/name`: a name that is empty, `.`, `..` or a
        path would put the run's files into another folder."""
        name = self.name
        if (not isinstance(name, str) or name.strip() in ("", ".", "..")
                or any(sep in name for sep in ("/", "\\", os.sep))):
            raise ValueError(
                f"`name` must name the run's folder inside `runs_dir`, without a path "
                f"separator, and not be empty, '.' or '..'; got {name!r}. E.g. 'wide-32'; "
                "set `runs_dir` for another parent folder."
            )

    def _check_numbers(self):
        """Each of `NUMBERS` finite and within its bounds (NaN compares false with both)."""
        for name, (low, low_included, high, hint) in NUMBERS.items():
            value = getattr(self, name)
            fits = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                    and math.isfinite(value)
                    and (value >= low if low_included else value > low)
                    and (high is None or value < high))
            if not fits:
                bounds = f"{'>=' if low_included else '>'} {low:g}"
                if high is not None:
                    bounds = f"in [{low:g}, {high:g})"
                raise ValueError(f"`{name}` must be a number {bounds} ({hint}), got {value!r}.")

    def _check_family_options(self):
        """U-Net++ and UNet 3+ are built with "same" padding, no dropout and plain blocks."""
        unsupported = {
            "padding": ("same", self.padding), "dropout": (0.0, self.dropout),
            "residual": (False, self.residual),
        }
        if self.architecture == "unet3+":  # it upsamples bilinearly by design
            unsupported["upsampling"] = ("transpose", self.upsampling)
        for name, (supported, value) in unsupported.items():
            if value != supported:
                raise ValueError(
                    f"`{name}={value!r}` is not available with architecture="
                    f"{self.architecture!r}, which is built with {name}={supported!r}. "
                    f"Use architecture='unet' for it, or leave `{name}` at {supported!r}."
                )

    @classmethod
    def for_gpu(cls, **overrides):
        """A larger network and a longer schedule for a GPU.

        About 5 minutes of `train` on an H100 (JAX, `mixed_bfloat16`). It has
        not been tuned: its first runs there scored no better than the CPU
        presets and overfit the training slices (docs/results.md, *The GPU
        configuration*).
        """
        values = dict(
            filters=32, batch_size=8, tile_size=384, epochs=60, steps_per_epoch=100,
            learning_rate=1e-3,
        )
        return cls(**{**values, **overrides})

    @classmethod
    def for_bfloat16_cpu(cls, **overrides):
        """Twice the width and the steps, in `mixed_bfloat16`, for CPUs with
        bfloat16 instructions (AVX512_BF16, AMX) under TensorFlow's oneDNN.

        Four times the default's FLOPs per step and twice the steps, at
        1.4x the float32 speed: about 16 minutes of `make train` on the 2-core
        AVX-512 machine of December 2026, where the default takes 5. There its
        mean over eight runs on five folds was higher, raw and with the
        watershed (docs/results.md).
        """
        values = dict(filters=32, epochs=20, mixed_precision="mixed_bfloat16")
        return cls(**{**values, **overrides})

    @classmethod
    def for_slower_bfloat16_cpu(cls, **overrides):
        """`for_bfloat16_cpu` at 24 filters and 750 steps, for bfloat16 CPUs
        too slow for its 32 filters and 1,000 steps within a time budget.

        About 12 minutes of `make train` where the 32-filter schedule would
        take 21 (a 2-core AVX-512 machine of December 2026). On the mean of two
        seeds it scored above the default on both tuning folds, raw and with
        the watershed; level with the 32-filter preset on one fold and below
        it on the other (docs/results.md).
        """
        return cls.for_bfloat16_cpu(**{"filters": 24, "epochs": 15, **overrides})

    @staticmethod
    def machine_preset():
        """The preset for this machine: `"gpu"` when Keras sees a GPU,
        `"cpu-bf16"` on a CPU that computes in bfloat16, else `"cpu"`."""
        return TrainConfig.machine_presets()[0]

    @staticmethod
    def machine_presets():
        """The presets that suit this machine, the largest first.

        `("gpu",)` when Keras sees a GPU, `("cpu-bf16", "cpu-bf16-24", "cpu")`
        on a CPU that computes in bfloat16 and `("cpu",)` on other CPUs. With a
        time budget, `make train` trains the first whose whole schedule fits
        it (see `train`'s `fallbacks`): CPUs with the same instructions differ
        in speed by more than 2x.
        """
        device = detect_device()
        if device.kind == "GPU":
            return ("gpu",)
        if computes_bfloat16_on_cpu(device):
            return ("cpu-bf16", "cpu-bf16-24", "cpu")
        return ("cpu",)

    @classmethod
    def from_preset(cls, preset, **overrides):
        """The configuration of a preset, `"auto"` (`machine_preset()`) or one
        of `PRESETS`, with some fields overridden."""
        builders = {
            "cpu": cls, "cpu-bf16": cls.for_bfloat16_cpu,
            "cpu-bf16-24": cls.for_slower_bfloat16_cpu, "gpu": cls.for_gpu,
        }
        if preset == "auto":
            preset = cls.machine_preset()
        if preset not in builders:
            raise ValueError(f"`preset` must be 'auto' or one of {PRESETS}, got {preset!r}.")
        return builders[preset](**overrides)

    @classmethod
    def auto(cls, **overrides):
        """The configuration for this machine (see `machine_preset`)."""
        return cls.from_preset("auto", **overrides)

    @property
    def run_dir(self):
        return Path(self.runs_dir) / self.name

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_file(cls, path, **overrides):
        """The config of a `config.json` file, with some fields overridden.

        Raises:
            ValueError: Naming the file, for one that is missing or a folder,
                not JSON, or not a config (`from_json`).
        """
        path = Path(path)
        example = "give the config.json of a run, e.g. runs/default/config.json"
        if not path.is_file():
            raise ValueError(
                f"{path} {'is a folder' if path.is_dir() else 'does not exist'}: {example}."
            )
        try:
            config = cls.from_json(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}): {example}.") from error
        except (TypeError, ValueError) as error:  # not a config's fields, or bad values
            raise ValueError(f"{path}: {error}") from error
        return dataclasses.replace(config, **overrides)

    @classmethod
    def from_json(cls, text):
        """A config from `to_json`'s text; fields it lacks take their defaults.

        Raises:
            ValueError: For text that is not a JSON object, or fields this
                version does not know (a run folder of another version).
        """
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise ValueError(f"A TrainConfig is a JSON object, got {type(fields).__name__}.")
        unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"The config names fields this version of unet_keras does not know: "
                f"{', '.join(unknown)}. It was written by another version: train in a new "
                "run folder (--name) or delete the old one."
            )
        return cls(**fields)
