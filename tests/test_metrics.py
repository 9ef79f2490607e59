import keras
import numpy as np
import pytest

from unet_keras import BinaryIoU, DiceCoefficient, dice_coefficient

pytestmark = pytest.mark.backends


def test_dice_coefficient_thresholds_predictions(rng):
    t = (rng.random((2, 16, 16, 1)) > 0.5).astype("float32")
    p = np.where(t > 0, 0.8, 0.2).astype("float32")
    assert float(dice_coefficient(t, p)) == pytest.approx(1.0, abs=1e-5)
    assert float(dice_coefficient(t, 1 - p)) == pytest.approx(0.0, abs=1e-5)


def test_dice_coefficient_matches_numpy(rng):
    t = (rng.random((3, 16, 16, 1)) > 0.5).astype("float32")
    p = rng.random((3, 16, 16, 1)).astype("float32")
    hard = (p >= 0.5).astype("float32")
    inter = (t * hard).sum((1, 2, 3))
    expected = (2 * inter / (t.sum((1, 2, 3)) + hard.sum((1, 2, 3)))).mean()
    assert float(dice_coefficient(t, p)) == pytest.approx(expected, rel=1e-5)


def test_stateful_dice_accumulates_over_batches(rng):
    t = (rng.random((4, 16, 16, 1)) > 0.5).astype("float32")
    p = rng.random((4, 16, 16, 1)).astype("float32")
    metric = DiceCoefficient()
    metric.update_state(t[:1], p[:1])
    metric.update_state(t[1:], p[1:])
    hard = p >= 0.5
    expected = 2 * (t * hard).sum() / (t.sum() + hard.sum())
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)
    metric.reset_state()
    metric.update_state(t, t)
    assert float(metric.result()) == pytest.approx(1.0)


def test_stateful_dice_multiclass_uses_argmax(rng):
    labels = rng.integers(0, 3, size=(2, 8, 8))
    t = np.eye(3, dtype="float32")[labels]
    metric = DiceCoefficient(class_id=2)
    metric.update_state(t, t * 0.9 + 0.03)
    assert float(metric.result()) == pytest.approx(1.0)


def test_dice_refuses_a_one_channel_mask_against_a_softmax(rng):
    mask = (rng.random((2, 8, 8, 1)) < 0.3).astype("float32")
    softmax = np.concatenate([1 - mask, mask], -1)
    with pytest.raises(ValueError, match="one_hot"):
        DiceCoefficient().update_state(mask, softmax)
    with pytest.raises(ValueError, match="one_hot"):
        dice_coefficient(mask[..., 0], softmax)


def test_stateful_dice_ignores_sample_weight_and_iou_applies_it(rng):
    """As both docstrings say: with weight maps (loss "weighted_ce") only the
    logged IoU is weighted."""
    t = (rng.random((2, 16, 16, 1)) > 0.5).astype("float32")
    p = rng.random((2, 16, 16, 1)).astype("float32")
    w = rng.integers(0, 3, (2, 16, 16, 1)).astype("float32")
    results = []
    for weight in (None, w):
        dice, iou = DiceCoefficient(), BinaryIoU(target_class_ids=[1])
        for metric in (dice, iou):
            metric.update_state(t, p, sample_weight=weight)
        results.append((float(dice.result()), float(iou.result())))
    assert results[1][0] == pytest.approx(results[0][0])
    assert results[1][1] != pytest.approx(results[0][1])


@pytest.mark.parametrize("target_class_ids", [[1], [0, 1]])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_iou_is_kerass_binary_iou(rng, target_class_ids, threshold):
    t = (rng.random((3, 16, 16, 1)) > 0.7).astype("float32")
    p = rng.random((3, 16, 16, 1)).astype("float32")
    w = rng.integers(0, 3, (3, 16, 16, 1)).astype("float32")  # Keras counts in int
    ours = BinaryIoU(target_class_ids=target_class_ids, threshold=threshold)
    theirs = keras.metrics.BinaryIoU(target_class_ids=target_class_ids, threshold=threshold)
    for metric in (ours, theirs):  # over batches, with and without sample weights
        metric.update_state(t[:1], p[:1])
        metric.update_state(t[1:], p[1:], sample_weight=w[1:])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours.total_cm), keras.ops.convert_to_numpy(theirs.total_cm),
        rtol=1e-5,
    )
    assert float(ours.result()) == pytest.approx(float(theirs.result()), rel=1e-5)
    hard = p >= threshold
    if target_class_ids == [1]:
        plain = BinaryIoU(target_class_ids=[1], threshold=threshold)
        plain.update_state(t, p)
        expected = (t * hard).sum() / ((t + hard) > 0).sum()
        assert float(plain.result()) == pytest.approx(expected, rel=1e-5)


def test_binary_iou_does_not_scatter(monkeypatch, rng):
    # Keras's confusion matrix scatters, a Python loop per pixel on PyTorch (keras#19512).
    from keras.src import ops

    def scatter(*args, **kwargs):
        raise AssertionError("ops.scatter called")

    monkeypatch.setattr(ops, "scatter", scatter)
    t = (rng.random((2, 8, 8, 1)) > 0.5).astype("float32")
    metric = BinaryIoU(target_class_ids=[1])
    metric.update_state(t, t)
    assert float(metric.result()) == pytest.approx(1.0)
    with pytest.raises(AssertionError, match="scatter"):
        keras.metrics.BinaryIoU(target_class_ids=[1]).update_state(t, t)



def test_binary_iou_logs_as_iou_and_reloads(tmp_path, rng):
    """Keras's default name, `binary_io_u`, made a history column nobody looks for."""
    from unet_keras.model import build_unet

    assert BinaryIoU().name == "iou"
    assert BinaryIoU(name="membrane_iou").name == "membrane_iou"
    again = BinaryIoU.from_config(BinaryIoU(target_class_ids=[1], threshold=0.3).get_config())
    assert (again.name, again.target_class_ids, again.threshold) == ("iou", [1], 0.3)

    x = rng.random((2, 16, 16, 1)).astype("float32")
    y = (x > 0.5).astype("float32")
    model = build_unet(filters=2, depth=1)
    model.compile(optimizer="sgd", loss="binary_crossentropy",
                  metrics=[BinaryIoU(target_class_ids=[1])])
    history = model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y))
    assert {"iou", "val_iou"} <= set(history.history)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    scores = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert scores["iou"] == pytest.approx(model.evaluate(x, y, verbose=0, return_dict=True)["iou"])
