"""`TrainConfig`: everything that defines a training run, shared by the CLI,
the notebooks and the Python API, and saved as `config.json` in the run folder.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from unet_keras.augment import zoom_bounds
from unet_keras.backend_utils import computes_bfloat16_on_cpu, detect_device
from unet_keras.geometry import valid_output_size
from unet_keras.malis import MERGE_LEARNING_RATE, MERGE_WEIGHT

ARCHITECTURES = ("unet", "unet++", "unet3+")
LOSSES = ("bce", "dice", "bce_dice", "bce_cldice", "weighted_ce")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
# TrainConfig(), .for_bfloat16_cpu(), .for_slower_bfloat16_cpu(), .for_gpu()
PRESETS = ("cpu", "cpu-bf16", "cpu-bf16-24", "gpu")


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
        self.val_slices = tuple(int(i) for i in self.val_slices)
        self.zoom_range = zoom_bounds(self.zoom_range, self.affine)
        if not self.val_slices:
            raise ValueError(
                "`val_slices` must name at least one held-out slice: the best model is "
                "chosen, and the run scored, on them."
            )
        for name, value, choices in (
            ("architecture", self.architecture, ARCHITECTURES),
            ("loss", self.loss, LOSSES),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
        ):
            if value not in choices:
                raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")
        for name in ("epochs", "steps_per_epoch", "batch_size", "tile_size", "workers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)!r}.")
        self._check_malis_options()
        if self.time_budget_minutes < 0:
            raise ValueError(
                f"`time_budget_minutes` must be >= 0 (0 = no limit), got "
                f"{self.time_budget_minutes!r}."
            )
        if not 0 <= self.ema < 1:
            raise ValueError(
                f"`ema` is the momentum of the weight average, in [0, 1) (0 = off), "
                f"got {self.ema!r}. Typical: 0.99."
            )
        if self.jit_compile not in ("auto", "on", "off"):
            raise ValueError(
                f"`jit_compile` must be 'auto', 'on' or 'off', got {self.jit_compile!r}."
            )
        if self.architecture != "unet":
            self._check_family_options()
        if self.padding == "valid":
            valid_output_size(self.tile_size, self.depth)  # raises with sizes that work
        elif self.tile_size % 2**self.depth:
            raise ValueError(
                f"`tile_size` must be divisible by 2**depth = {2**self.depth} for "
                f"padding='same', got {self.tile_size}."
            )

    def _check_malis_options(self):
        for name in ("malis_steps", "malis_weight", "malis_learning_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)!r}.")

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
