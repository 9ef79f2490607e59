"""unet-keras: a compact Keras 3 U-Net for biomedical image segmentation.

Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI 2015 (arXiv:1505.04597).
"""

from unet_keras.losses import BCEDiceLoss, DiceLoss, WeightedCrossEntropy, soft_dice
from unet_keras.metrics import DiceCoefficient, dice_coefficient
from unet_keras.model import (
    build_unet,
    conv_block,
    count_conv_layers,
    down_step,
    head,
    up_step,
    valid_input_size,
    valid_output_size,
)

__version__ = "0.1.0"

__all__ = [
    "BCEDiceLoss",
    "DiceCoefficient",
    "DiceLoss",
    "WeightedCrossEntropy",
    "build_unet",
    "conv_block",
    "count_conv_layers",
    "dice_coefficient",
    "down_step",
    "head",
    "soft_dice",
    "up_step",
    "valid_input_size",
    "valid_output_size",
]
