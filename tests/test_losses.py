import keras
import numpy as np
import pytest

from unet_keras import BCEDiceLoss, DiceLoss, WeightedCrossEntropy
from unet_keras.losses import soft_cldice, soft_dice, soft_skeleton

pytestmark = pytest.mark.backends


def _numpy_dice_loss(t, p, smooth=1.0):
    axes = tuple(range(1, t.ndim - 1))
    inter = (t * p).sum(axis=axes)
    total = t.sum(axis=axes) + p.sum(axis=axes)
    return (1 - ((2 * inter + smooth) / (total + smooth)).mean(-1)).mean()


def _numpy_bce(t, p, eps=1e-7):
    p = np.clip(p, eps, 1 - eps)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def test_dice_loss_is_zero_for_identical_and_one_for_disjoint_masks(rng):
    mask = (rng.random((2, 32, 32, 1)) > 0.5).astype("float32")
    loss = DiceLoss(smooth=1e-6)
    assert float(loss(mask, mask)) == pytest.approx(0.0, abs=1e-5)
    assert float(loss(mask, 1.0 - mask)) == pytest.approx(1.0, abs=1e-5)


def test_dice_loss_matches_numpy_on_random_masks(rng):
    t = (rng.random((3, 24, 20, 1)) > 0.7).astype("float32")
    p = rng.random((3, 24, 20, 1)).astype("float32")
    assert float(DiceLoss()(t, p)) == pytest.approx(_numpy_dice_loss(t, p), rel=1e-5)


def test_dice_loss_multiclass_one_hot_averages_channels(rng):
    labels = rng.integers(0, 3, size=(2, 16, 16))
    t = np.eye(3, dtype="float32")[labels]
    logits = rng.normal(size=(2, 16, 16, 3))
    p = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    assert float(DiceLoss()(t, p)) == pytest.approx(_numpy_dice_loss(t, p), rel=1e-5)


def test_dice_loss_accepts_masks_without_channel_axis(rng):
    t = (rng.random((2, 16, 16)) > 0.5).astype("float32")
    p = rng.random((2, 16, 16, 1)).astype("float32")
    assert float(DiceLoss()(t, p)) == pytest.approx(_numpy_dice_loss(t[..., None], p), rel=1e-5)


def test_dice_is_per_image_then_averaged(rng):
    """A perfect small image and a wrong large one weigh the same."""
    t = np.zeros((2, 16, 16, 1), "float32")
    t[0, :2, :2] = 1
    t[1] = 1
    p = t.copy()
    p[1] = 0
    assert float(DiceLoss(smooth=1e-6)(t, p)) == pytest.approx(0.5, abs=1e-4)


def test_bce_dice_is_the_weighted_sum(rng):
    t = (rng.random((2, 16, 16, 1)) > 0.6).astype("float32")
    p = rng.uniform(0.05, 0.95, (2, 16, 16, 1)).astype("float32")
    expected = 0.3 * _numpy_bce(t, p).mean() + 2.0 * _numpy_dice_loss(t, p)
    loss = BCEDiceLoss(bce_weight=0.3, dice_weight=2.0)
    assert float(loss(t, p)) == pytest.approx(expected, rel=1e-4)


def test_weighted_cross_entropy_matches_numpy(rng):
    t = (rng.random((2, 16, 16, 1)) > 0.6).astype("float32")
    p = rng.uniform(0.05, 0.95, (2, 16, 16, 1)).astype("float32")
    w = rng.uniform(0.5, 10, (2, 16, 16)).astype("float32")
    expected = (_numpy_bce(t[..., 0], p[..., 0]) * w).mean()
    loss = WeightedCrossEntropy()
    assert float(loss(t, p, sample_weight=w)) == pytest.approx(expected, rel=1e-4)
    unweighted = _numpy_bce(t, p).mean()
    assert float(loss(t, p)) == pytest.approx(unweighted, rel=1e-4)


def test_weighted_cross_entropy_categorical(rng):
    labels = rng.integers(0, 2, size=(2, 8, 8))
    t = np.eye(2, dtype="float32")[labels]
    p = rng.uniform(0.05, 0.95, (2, 8, 8, 1)).astype("float32")
    p = np.concatenate([1 - p, p], -1)
    w = rng.uniform(1, 5, (2, 8, 8)).astype("float32")
    expected = (-(t * np.log(p)).sum(-1) * w).mean()
    assert float(WeightedCrossEntropy()(t, p, sample_weight=w)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("cls", [DiceLoss, BCEDiceLoss, WeightedCrossEntropy])
@pytest.mark.parametrize("mask_shape", [(2, 8, 8, 1), (2, 8, 8)])
def test_a_one_channel_mask_against_a_softmax_is_refused(rng, cls, mask_shape):
    """Broadcast against both channels, a perfect prediction scored 0.49."""
    mask = (rng.random(mask_shape) < 0.3).astype("float32")
    labels = mask.reshape(2, 8, 8).astype("int32")
    one_hot = keras.ops.convert_to_numpy(keras.ops.one_hot(labels, 2))
    with pytest.raises(ValueError, match=r"1 channel\(s\) and the prediction 2.*one_hot"):
        cls()(mask, one_hot)
    assert float(cls()(one_hot, one_hot)) == pytest.approx(0.0, abs=1e-5)  # as advised


def test_unknown_channel_counts_are_not_checked():
    """Inside a traced function a channel size may be unknown (None)."""
    mask = keras.KerasTensor((None, 8, 8, None))
    dice = soft_dice(mask, keras.KerasTensor((None, 8, 8, 2)))
    assert tuple(dice.shape) == (None,)


@pytest.mark.parametrize("cls", [DiceLoss, BCEDiceLoss, WeightedCrossEntropy])
def test_losses_serialize_by_registered_name(cls):
    loss = cls()
    config = keras.saving.serialize_keras_object(loss)
    assert config["registered_name"].startswith("unet_keras>")
    again = keras.saving.deserialize_keras_object(config)
    assert type(again) is cls and again.get_config() == loss.get_config()


def test_bad_loss_arguments_raise():
    with pytest.raises(ValueError, match="smooth"):
        DiceLoss(smooth=-1)
    with pytest.raises(ValueError, match="weights must be >= 0"):
        BCEDiceLoss(bce_weight=-1)
    with pytest.raises(ValueError, match="weights must be >= 0"):
        BCEDiceLoss(cldice_weight=-0.5)
    with pytest.raises(ValueError, match="skeleton_iterations"):
        BCEDiceLoss(cldice_weight=0.5, skeleton_iterations=0)


def _membrane(thickness=5, size=48):
    """A vertical membrane across the image, as a (1, size, size, 1) mask."""
    mask = np.zeros((1, size, size, 1), "float32")
    start = size // 2 - thickness // 2
    mask[:, :, start:start + thickness] = 1
    return mask


def test_soft_skeleton_of_a_bar_is_its_centre_line():
    skeleton = np.asarray(soft_skeleton(_membrane(thickness=5), iterations=5))[0, ..., 0]
    assert (skeleton[:, 24] == 1).all()  # one pixel wide, all the way down
    assert skeleton.sum() == pytest.approx(48)


def test_cldice_punishes_a_gap_more_than_the_same_pixels_added():
    membrane = _membrane()
    gap = membrane.copy()
    gap[:, 20:24] = 0  # 4 rows cut through: two cells merge
    thicker = membrane.copy()
    thicker[:, 0:4, 27:32] = 1  # 20 extra pixels, nothing merged
    assert gap.sum() == membrane.sum() - 20 and thicker.sum() == membrane.sum() + 20
    # Dice barely tells them apart; clDice does.
    dice_gap = float(soft_dice(membrane, gap)[0])
    dice_thicker = float(soft_dice(membrane, thicker)[0])
    assert abs(dice_gap - dice_thicker) < 0.005
    cl_gap = float(soft_cldice(membrane, gap, iterations=5)[0])
    cl_thicker = float(soft_cldice(membrane, thicker, iterations=5)[0])
    assert cl_gap < cl_thicker - 0.015
    assert float(soft_cldice(membrane, membrane, iterations=5)[0]) == pytest.approx(1.0)


def test_bce_dice_loss_adds_the_cldice_term(rng):
    t = (rng.random((2, 32, 32, 1)) > 0.6).astype("float32")
    p = rng.uniform(0.05, 0.95, t.shape).astype("float32")
    plain = float(BCEDiceLoss(dice_weight=0.5)(t, p))
    cldice = 1.0 - np.asarray(soft_cldice(t, p, iterations=3)).mean()
    loss = BCEDiceLoss(dice_weight=0.5, cldice_weight=0.5, skeleton_iterations=3)
    assert float(loss(t, p)) == pytest.approx(plain + 0.5 * cldice, rel=1e-4)
