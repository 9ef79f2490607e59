"""unet-keras: a compact Keras 3 U-Net for biomedical image segmentation.

Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI 2015 (arXiv:1505.04597).
"""

from unet_keras.tensorflow_env import enable_onednn, warn_if_onednn_off

if not enable_onednn():  # before the imports below load Keras, and with it TensorFlow
    warn_if_onednn_off()

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
    "load_isbi2012",
    "merge_weights",
    "predict_tiled",
    "prediction_network",
    "prune_unet_plus_plus",
    "rand_and_info_scores",
    "random_tile",
    "ridge_membranes",
    "score_isbi",
    "segmentation_errors",
    "soft_cldice",
    "soft_dice",
    "soft_skeleton",
    "split_slices",
    "thinned_segmentation",
    "up_step",
    "valid_input_size",
    "valid_output_size",
    "watershed_cells",
    "watershed_membranes",
]
