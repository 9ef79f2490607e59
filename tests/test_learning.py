"""The pieces train together: a small U-Net learns discs on noise, and a model
compiled with the package's losses and metrics survives a save/load round trip."""

import keras
import numpy as np
import pytest

from unet_keras import (
    BCEDiceLoss,
    BinaryIoU,
    DiceCoefficient,
    DiceLoss,
    WeightedCrossEntropy,
    build_unet,
)

pytestmark = pytest.mark.backends


def discs_on_noise(n, size=32, seed=0):
    """Images of 1-3 bright discs on Gaussian noise, and their masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.normal(0.0, 0.3, (n, size, size, 1)).astype("float32")
    masks = np.zeros((n, size, size, 1), "float32")
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(6, size - 6, 2)
            r = rng.uniform(3, 7)
            masks[i, ..., 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    images += masks
    return images, masks


def test_small_unet_learns_discs_on_noise():
    keras.utils.set_random_seed(0)
    x, y = discs_on_noise(256, seed=0)
    x_test, y_test = discs_on_noise(32, seed=1)
    model = build_unet(filters=8, depth=2, dropout=0)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss=BCEDiceLoss(), metrics=[DiceCoefficient()]
    )
    model.fit(x, y, batch_size=16, epochs=8, verbose=0)
    scores = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert scores["dice"] > 0.9, scores


def test_weight_map_flows_through_fit_as_sample_weight():
    x, y = discs_on_noise(8, size=16)
    w = np.where(y[..., 0] > 0, 5.0, 1.0).astype("float32")
    model = build_unet(filters=4, depth=2, dropout=0)
    model.compile(optimizer="adam", loss=WeightedCrossEntropy())
    history = model.fit(x, y, sample_weight=w, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # The weights matter: the weighted loss differs from the unweighted one.
    weighted = model.evaluate(x, y, sample_weight=w, verbose=0)
    plain = model.evaluate(x, y, verbose=0)
    assert weighted != pytest.approx(plain, rel=1e-3)


@pytest.mark.parametrize("loss", [DiceLoss(), BCEDiceLoss(0.5, 2.0), WeightedCrossEntropy()])
def test_save_and_load_without_custom_objects(tmp_path, loss):
    x, y = discs_on_noise(4, size=16)
    model = build_unet(filters=4, depth=2, batch_norm=True)
    metrics = [DiceCoefficient(), BinaryIoU()]
    model.compile(optimizer="adam", loss=loss, metrics=metrics)
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "unet.keras"
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert type(again.loss) is type(loss)
    assert again.loss.get_config() == loss.get_config()
    again.fit(x, y, epochs=1, verbose=0)  # the reloaded model trains on
