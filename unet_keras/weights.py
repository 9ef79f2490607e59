"""The paper's border weight map, which makes thin membranes between touching
cells expensive to miss:

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 * sigma^2))

Cells are the 4-connected components of the cell interior (mask == 0), as the
ISBI scoring sees them; d1 and d2 are the Euclidean distances to the nearest
and second-nearest cell. As in the common implementation of the paper, the
border term is added to background (membrane) pixels only: a pixel inside a
cell has d1 = 0 and gets its class weight w_c alone.

Maps depend on the labels only, so compute them once per ground-truth image
and warp them together with the image and mask during augmentation.
"""

import cv2
import numpy as np

# exp(-CUTOFF^2 / 2) ~ 1.5e-8: beyond d2 = CUTOFF * sigma the border term is
# below float32 resolution of w_c, so each cell's distances are computed only
# in a window that reaches that far around it.
CUTOFF = 6.0


def _as_mask(mask):
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(
            f"`mask` must be (H, W) or (H, W, 1), got shape {mask.shape}. "
            "For a batch, use `border_weight_maps`."
        )
    values = np.unique(mask)
    if not np.isin(values, (0, 1)).all():
        shown = ", ".join(f"{v:g}" for v in values[:10]) + (", ..." if values.size > 10 else "")
        raise ValueError(
            f"`mask` must be binary (1 = membrane, 0 = cell interior), found values "
            f"{{{shown}}}. Threshold it first, e.g. `mask > 0.5`."
        )
    return mask.astype(bool)


def balanced_class_weights(masks):
    """Class weights inversely proportional to the class frequencies.

    Each class gets `n_pixels / (2 * n_pixels_of_class)` (scikit-learn's
    "balanced" convention): both classes then carry the same total weight and
    the mean weight over the pixels is 1. A class that does not occur gets
    weight 1.

    Args:
        masks: One or more binary masks, 1 = membrane.

    Returns:
        A tuple `(w_interior, w_membrane)` of floats.
    """
    masks = np.asarray(masks)
    n_membrane = int(np.count_nonzero(masks))
    n_interior = masks.size - n_membrane
    if n_membrane == 0 or n_interior == 0:
        return 1.0, 1.0
    return masks.size / (2.0 * n_interior), masks.size / (2.0 * n_membrane)


def _class_weight_map(mask, class_weights):
    if class_weights is None:
        return np.ones(mask.shape, np.float32)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                f"`class_weights` must be 'balanced', None or a tuple (w_interior, "
                f"w_membrane), got {class_weights!r}."
            )
        class_weights = balanced_class_weights(mask)
    if len(class_weights) != 2:
        raise ValueError(
            f"`class_weights` must be a pair (w_interior, w_membrane), got {class_weights!r}."
        )
    w_interior, w_membrane = (float(w) for w in class_weights)
    return np.where(mask, w_membrane, w_interior).astype(np.float32)


def _two_nearest_cells(interior, reach):
    """Distances d1 <= d2 from every pixel to its nearest and second-nearest
    cell, exact wherever d2 <= `reach` and inf where fewer than two cells lie
    within `reach`."""
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(
        interior.astype(np.uint8), connectivity=4
    )
    height, width = interior.shape
    d1 = np.full(interior.shape, np.inf, np.float32)
    d2 = np.full(interior.shape, np.inf, np.float32)
    for cell in range(1, n_labels):
        x, y, w, h = stats[cell, :4]
        # Every pixel within `reach` of the cell lies in its box grown by
        # `reach`, and all the cell's pixels are inside, so the distances in
        # the window are exact.
        rows = slice(max(y - reach, 0), min(y + h + reach, height))
        cols = slice(max(x - reach, 0), min(x + w + reach, width))
        outside = (labels[rows, cols] != cell).astype(np.uint8)
        dist = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        near, second = d1[rows, cols], d2[rows, cols]
        np.minimum(second, np.maximum(near, dist), out=second)
        np.minimum(near, dist, out=near)
    return d1, d2


def border_weight_map(mask, w0=10.0, sigma=5.0, class_weights="balanced"):
    """The paper's weight map of one membrane mask.

    Args:
        mask: Binary mask `(H, W)` or `(H, W, 1)` as `load_isbi2012` returns
            it: 1 = membrane (background), 0 = cell interior.
        w0: Height of the border term (10 in the paper).
        sigma: Width of the border term in pixels (about 5 in the paper).
        class_weights: `"balanced"` (see `balanced_class_weights`, computed
            from this mask), None for 1 everywhere, or a pair
            `(w_interior, w_membrane)`.

    Returns:
        A float32 array `(H, W)`.

    Raises:
        ValueError: If the mask is not binary or has the wrong shape.
    """
    if w0 < 0:
        raise ValueError(f"`w0` must be >= 0, got {w0!r}.")
    if not sigma > 0:
        raise ValueError(f"`sigma` must be > 0, got {sigma!r}.")
    membrane = _as_mask(mask)
    weights = _class_weight_map(membrane, class_weights)
    if w0 == 0 or membrane.all() or not membrane.any():
        return weights
    d1, d2 = _two_nearest_cells(~membrane, reach=int(np.ceil(CUTOFF * sigma)))
    total = d1[membrane] + d2[membrane]
    weights[membrane] += w0 * np.exp(-(total * total) / (2.0 * sigma * sigma))
    return weights


def border_weight_maps(masks, w0=10.0, sigma=5.0, class_weights="balanced"):
    """`border_weight_map` of every mask of a batch.

    Args:
        masks: Binary masks `(N, H, W)` or `(N, H, W, 1)`, 1 = membrane.
        w0: Height of the border term.
        sigma: Width of the border term in pixels.
        class_weights: As for `border_weight_map`, except that `"balanced"`
            uses the class frequencies of all the masks together, so every
            image weighs its classes alike.

    Returns:
        A float32 array `(N, H, W)`, ready to be the `weights` of a
        `TileDataset` or the `sample_weight` of `model.fit`.
    """
    masks = np.asarray(masks)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.ndim != 3:
        raise ValueError(f"`masks` must be (N, H, W) or (N, H, W, 1), got shape {masks.shape}.")
    if isinstance(class_weights, str) and class_weights == "balanced":
        _as_mask(masks.reshape(-1, masks.shape[-1]))  # one check, with a clear message
        class_weights = balanced_class_weights(masks)
    return np.stack([border_weight_map(m, w0, sigma, class_weights) for m in masks])
