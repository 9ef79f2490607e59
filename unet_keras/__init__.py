"""unet-keras: a compact Keras 3 U-Net for biomedical image segmentation.

Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI 2015 (arXiv:1505.04597).
"""

import json
import os

from unet_keras.tensorflow_env import enable_onednn, warn_if_onednn_off

# Keras imports its backend when it is imported: one of these modules missing
# means a missing backend, not a broken Keras.
_BACKEND_MODULES = ("tensorflow", "torch", "jax", "jaxlib")


def _keras_backend_setting():
    """The backend Keras is set to use, read as Keras reads it, without
    importing Keras (which would import that backend).

    Returns:
        A tuple `(backend, source)`: the backend's name and what set it.
    """
    backend = os.environ.get("KERAS_BACKEND")
    if backend:
        return backend, f"KERAS_BACKEND={backend}"
    keras_dir = os.environ.get("KERAS_HOME")
    if keras_dir is None:
        home = os.path.expanduser("~")
        keras_dir = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    config = os.path.join(keras_dir, "keras.json")
    try:
        with open(config) as file:
            backend = json.load(file).get("backend")
    except (OSError, ValueError, AttributeError):  # no file, bad JSON, not an object
        backend = None
    if backend:
        return backend, f"the backend of {config}"
    return "tensorflow", "Keras's default backend"


def _import_keras():
    """Imports Keras; a missing backend becomes an error that says how to install one.

    Raises:
        ImportError: If the backend's module is not installed; other import
            errors pass unchanged.
    """
    # Read first: a failed import of Keras has already written its default
    # backend to a keras.json it did not find.
    backend, source = _keras_backend_setting()
    try:
        import keras  # noqa: F401
    except ModuleNotFoundError as error:
        missing = (error.name or "").partition(".")[0]
        if missing not in _BACKEND_MODULES:
            raise
        raise ImportError(
            f"unet-keras needs Keras's backend installed: Keras is set to use {backend} "
            f"({source}), but the module `{missing}` is not installed. Install TensorFlow, the "
            'default backend, with `pip install "unet-keras[tensorflow]"`, or install PyTorch '
            'or JAX (`pip install "unet-keras[torch]"` or `pip install "unet-keras[jax]"`) and '
            "set KERAS_BACKEND=torch or KERAS_BACKEND=jax."
        ) from error


if not enable_onednn():  # before the imports below load Keras, and with it TensorFlow
    warn_if_onednn_off()
_import_keras()  # after enable_onednn: it imports TensorFlow on the default backend

from unet_keras.agglomeration import MergeClassifier, agglomerate_cells, agglomerate_membranes
from unet_keras.augment import Augmenter, elastic_deform, elastic_displacement
from unet_keras.backend_utils import detect_device
from unet_keras.datasets import DownloadError, download_isbi2012, load_isbi2012, split_slices
from unet_keras.errors import segmentation_errors
from unet_keras.evaluate import rand_and_info_scores, score_isbi, thinned_segmentation
from unet_keras.family import (
    build_unet3plus,
    build_unet_plus_plus,
    prediction_network,
    prune_unet_plus_plus,
)
from unet_keras.folding import fold_batch_norm
from unet_keras.geometry import valid_input_size, valid_output_size
from unet_keras.inference import predict_tiled
from unet_keras.io import (
    list_images,
    load_image_mask_pairs,
    read_stack,
    to_unit_range,
    write_stack,
)
from unet_keras.losses import (
    BCEDiceLoss,
    DiceLoss,
    WeightedCrossEntropy,
    soft_cldice,
    soft_dice,
    soft_skeleton,
)
from unet_keras.malis import MergeWeightedLoss, fine_tune_merges, merge_weights
from unet_keras.metrics import BinaryIoU, DiceCoefficient, dice_coefficient
from unet_keras.model import (
    build_unet,
    conv_block,
    conv_bn_relu,
    count_conv_layers,
    down_step,
    forward_flops,
    head,
    up_step,
)
from unet_keras.pipeline import PerOutputDataset, TileDataset
from unet_keras.postprocess import ridge_membranes, watershed_cells, watershed_membranes
from unet_keras.tiles import random_tile
from unet_keras.weights import border_weight_map, border_weight_maps

__version__ = "0.1.0"

__all__ = [
    "Augmenter",
    "BCEDiceLoss",
    "BinaryIoU",
    "DiceCoefficient",
    "DiceLoss",
    "DownloadError",
    "MergeClassifier",
    "MergeWeightedLoss",
    "PerOutputDataset",
    "TileDataset",
    "WeightedCrossEntropy",
    "agglomerate_cells",
    "agglomerate_membranes",
    "border_weight_map",
    "border_weight_maps",
    "build_unet",
    "build_unet3plus",
    "build_unet_plus_plus",
    "conv_block",
    "conv_bn_relu",
    "count_conv_layers",
    "detect_device",
    "dice_coefficient",
    "down_step",
    "download_isbi2012",
    "elastic_deform",
    "elastic_displacement",
    "fine_tune_merges",
    "fold_batch_norm",
    "forward_flops",
    "head",
    "list_images",
    "load_image_mask_pairs",
    "load_isbi2012",
    "merge_weights",
    "predict_tiled",
    "prediction_network",
    "prune_unet_plus_plus",
    "rand_and_info_scores",
    "random_tile",
    "read_stack",
    "ridge_membranes",
    "score_isbi",
    "segmentation_errors",
    "soft_cldice",
    "soft_dice",
    "soft_skeleton",
    "split_slices",
    "thinned_segmentation",
    "to_unit_range",
    "up_step",
    "valid_input_size",
    "valid_output_size",
    "watershed_cells",
    "watershed_membranes",
    "write_stack",
]
