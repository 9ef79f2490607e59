"""Post-processing: closing gaps in membrane maps with a seeded watershed.

V_rand and V_info punish a merge far more than a slightly misplaced boundary:
one faint pixel in a membrane joins two cells into one segment. A seeded
(marker-controlled) watershed closes such gaps. Its seeds are the connected
regions where the network is confident of cell interior (membrane probability
below `marker_threshold`); flooding the probability map from them grows every
seed until it meets a neighbour, and the lines where they meet are closed,
one-pixel boundaries. Two cells that touch through a faint gap keep apart as
long as each holds its own seed.

Seeds smaller than `min_marker_size` pixels are dropped: they are mostly
specks inside a cell (vesicles, mitochondria) that would split it.

A cell with two seeds, on either side of a mitochondrion or a fold that the
network marks faintly, is cut in two by the flood. So neighbouring regions
whose shared boundary has a mean membrane probability below
`merge_threshold` are merged (lowest first, skimage's hierarchical merging of
a region adjacency graph) and flooded again from the merged seeds. Real
membranes are bright along most of their length and stay.

The merging changes which seeds are best. Without it, a seed must not split
a cell, so it may be generous; with it, a split is repaired, and the error
left is a seed that leaks through a faint gap into the next cell, which
nothing repairs. Hence strict seeds: interior below 0.05, at least 10
pixels, merged below 0.7 (on held-out slices 20-24, seeds spanning two true
cells fell from 22 to 14). The three were chosen together on the saved maps
of nine runs covering the whole training stack (six folds, held-out slices
0-4, 5-9, ..., 25-29; marker thresholds 0.02-0.3, sizes 0-50, merge levels
0.5-0.8), and checked by nested cross-validation: chosen on five folds and
scored on the sixth, they beat the earlier marker threshold 0.1 with size 20
(see docs/results.md).

Where the boundary lies matters too. The ISBI scoring thins each thresholded
membrane band to its middle line, and a line pixel that falls on true cell
interior counts as a segment of its own, which costs V_info. A network's band
is rarely symmetric about the membrane, while its probability peaks on it:
`ridge_membranes` redraws every boundary along that ridge, and the watershed's
and the learned merging's maps keep those ridges under their own lines.
"""

import cv2
import numpy as np
from scipy import ndimage
from skimage import graph
from skimage.morphology import h_minima
from skimage.segmentation import watershed

from unet_keras.evaluate import as_membrane_slices, is_single_slice

RIDGE_MIN_DEPTH = 0.1  # chosen on held-out slices 0-4 and 20-24 (docs/results.md)


def _check_parameters(marker_threshold, min_marker_size, merge_threshold):
    if not 0 < marker_threshold < 1:
        raise ValueError(f"`marker_threshold` must lie in (0, 1), got {marker_threshold!r}.")
    if merge_threshold is not None and not 0 <= merge_threshold <= 1:
        raise ValueError(
            f"`merge_threshold` must lie in [0, 1] (None or 0: no merging), "
            f"got {merge_threshold!r}."
        )
    if int(min_marker_size) != min_marker_size or min_marker_size < 0:
        raise ValueError(
            f"`min_marker_size` must be a whole number of pixels >= 0, got {min_marker_size!r}."
        )


def _markers(prob, marker_threshold, min_marker_size):
    """Labelled seeds: 4-connected confident-interior regions, small ones dropped."""
    confident = (prob < marker_threshold).astype(np.uint8)
    count, markers, stats, _ = cv2.connectedComponentsWithStats(
        confident, connectivity=4, ltype=cv2.CV_32S
    )
    keep = stats[:, cv2.CC_STAT_AREA] >= min_marker_size
    keep[0] = False  # OpenCV's label 0 is the background, here the uncertain pixels
    relabelled = np.zeros(count, np.int32)
    relabelled[keep] = np.arange(1, keep.sum() + 1)
    return relabelled[markers]


def _mean_boundary(rag, src, dst, neighbour):
    """Edge of a merged region: the pixel-weighted mean of both old boundaries."""
    edges = [rag[node].get(neighbour, {"weight": 0.0, "count": 0}) for node in (src, dst)]
    count = sum(e["count"] for e in edges)
    return {"count": count, "weight": sum(e["weight"] * e["count"] for e in edges) / count}


def _merge_seeds(regions, rag, markers, threshold):
    """Seeds relabelled so that the regions that skimage's hierarchical merging
    of `rag` joins (lowest edge weight first, while below `threshold`; merged
    edges weighted by `_mean_boundary`) share a label. Also the learned
    merging's (agglomeration.py), with its own edge weights."""
    merged = graph.merge_hierarchical(
        regions, rag, thresh=threshold, rag_copy=False, in_place_merge=True,
        merge_func=lambda rag, src, dst: None, weight_func=_mean_boundary,
    )
    seeds = markers > 0
    relabelled = markers.copy()
    relabelled[seeds] = merged[seeds] + 1  # merge_hierarchical numbers from 0
    return relabelled


def _merge_faint_boundaries(prob, markers, merge_threshold):
    """Seeds relabelled so that regions split only by a faint boundary share a label."""
    regions = watershed(prob, markers, connectivity=1)  # no lines: neighbours touch
    rag = graph.rag_boundary(regions, prob.astype(np.float64), connectivity=1)
    return _merge_seeds(regions, rag, markers, merge_threshold)


def _watershed(prob, marker_threshold, min_marker_size, merge_threshold):
    """Labels of checked `(N, H, W)` probabilities; see `watershed_cells`."""
    labels = np.ones(prob.shape, np.int32)
    for i, slice_prob in enumerate(prob):
        markers = _markers(slice_prob, marker_threshold, min_marker_size)
        if markers.max() > 1 and merge_threshold:
            markers = _merge_faint_boundaries(slice_prob, markers, merge_threshold)
        if markers.any():
            # connectivity=1: the lines separate the cells 4-connectedly, as they are scored.
            labels[i] = watershed(slice_prob, markers, connectivity=1, watershed_line=True)
    return labels


def _ridges(prob, min_depth):
    """`ridge_membranes` of checked float32 `(N, H, W)` probabilities."""
    ridged = prob.copy()
    for i, slice_prob in enumerate(prob):
        markers = None  # every local minimum a basin
        if min_depth > 0:
            minima = h_minima(slice_prob.astype(np.float64), min_depth)
            markers, count = ndimage.label(minima, structure=np.ones((3, 3)))
            if count < 2:  # no two basins that deep: no boundary between them to move
                continue
        basins = watershed(slice_prob, markers, connectivity=1, watershed_line=True)
        lowest = ndimage.minimum(slice_prob, basins, np.arange(basins.max() + 1))
        ridged[i] = np.where(basins == 0, slice_prob, np.asarray(lowest, np.float32)[basins])
    return ridged


def ridge_membranes(membrane_prob, min_depth=RIDGE_MIN_DEPTH):
    """Membrane probabilities with every boundary one pixel wide, on its ridge.

    The watershed of the map itself (seeded by its minima at least
    `min_depth` deep) splits it into basins, each a cell or part of one, and
    the lines between them run along the crests of the membranes. The lines keep
    their probability and each basin takes its lowest one. So a threshold of
    the result still opens a gap where the map's crest is faint and still
    keeps a cell where the map has interior, much as the same threshold of the
    map does, but its boundaries are the one-pixel crests rather than bands
    that the scoring thins to their middle. A slice with fewer than two
    basins that deep has no such boundary and is returned as it is.

    Args:
        membrane_prob: Membrane probabilities in [0, 1], `(N, H, W)`,
            `(N, H, W, 1)` or one `(H, W)` or `(H, W, 1)` slice.
        min_depth: Minima shallower than this (by how much higher the lowest
            way out of them is) seed no basin: they are noise, and a faint
            speck inside a membrane band would otherwise become a whole basin
            at the thresholds where it counts as interior. 0 seeds every
            local minimum.

    Returns:
        float32 membrane probabilities of the same shape as `membrane_prob`.
        Like the map, it is a valid ISBI submission as `1 - result`.

    Raises:
        ValueError: For a shape other than the above, values outside [0, 1]
            or not finite, or `min_depth` outside [0, 1).
    """
    if not 0 <= min_depth < 1:
        raise ValueError(f"`min_depth` must lie in [0, 1), got {min_depth!r}.")
    prob = as_membrane_slices(membrane_prob, np.float32)
    return _ridges(prob, min_depth).reshape(np.shape(membrane_prob))


def draw_lines(labels, membrane_map):
    """`membrane_map` with the boundary lines of `labels` set to 1.

    Args:
        labels: Labels of cells, 0 on the lines between them, the shape of
            `membrane_map` without a channel axis.
        membrane_map: Membrane probabilities in [0, 1] to draw the lines over:
            the map the cells were found in, or its `ridge_membranes`.

    Returns:
        float32 membrane probabilities of the same shape as `membrane_map`:
        threshold 0.0 of the result is exactly the segmentation `labels`.
    """
    under = as_membrane_slices(membrane_map, np.float32)
    closed = np.where(np.reshape(labels, under.shape) == 0, 1.0, under)
    return closed.astype(np.float32).reshape(np.shape(membrane_map))


def watershed_cells(
    membrane_prob, marker_threshold=0.05, min_marker_size=10, merge_threshold=0.7
):
    """Cell segmentation by a seeded watershed on membrane probabilities.

    Args:
        membrane_prob: Membrane probabilities in [0, 1], `(N, H, W)`,
            `(N, H, W, 1)` or one `(H, W)` or `(H, W, 1)` slice, e.g. the
            output of `predict_tiled`.
        marker_threshold: Pixels with a membrane probability below this are
            confident interior; their 4-connected regions seed the watershed.
        min_marker_size: Seeds with fewer pixels are dropped (0 keeps all).
        merge_threshold: Neighbouring cells whose shared boundary has a mean
            membrane probability below this become one cell; None or 0
            keeps every seed's cell apart.

    Returns:
        int32 labels of the same shape as `membrane_prob` without a channel
        axis: 1, 2, ... for cells (numbered per slice) and 0 for the one-pixel
        boundary lines between them. A slice without any seed is one cell.

    Raises:
        ValueError: For a shape other than the above, values outside [0, 1]
            or not finite, or parameters out of range.
    """
    _check_parameters(marker_threshold, min_marker_size, merge_threshold)
    labels = _watershed(
        as_membrane_slices(membrane_prob, np.float32), marker_threshold, min_marker_size,
        merge_threshold,
    )
    return labels[0] if is_single_slice(membrane_prob) else labels


def watershed_membranes(
    membrane_prob, marker_threshold=0.05, min_marker_size=10, merge_threshold=0.7,
    ridges=True,
):
    """Membrane probabilities with the gaps between cells closed.

    The result is `membrane_prob`, with its boundaries redrawn on their ridges
    (`ridge_membranes`), and the boundary lines of `watershed_cells` set to
    1.0. Scored like the ISBI leaderboard, its threshold 0.0 is exactly the
    watershed segmentation; higher thresholds add the network's own
    boundaries on top. It is a valid submission file (as interior
    probability `1 - result`).

    Args:
        membrane_prob: Membrane probabilities in [0, 1], `(N, H, W)`,
            `(N, H, W, 1)` or one `(H, W)` or `(H, W, 1)` slice.
        marker_threshold: See `watershed_cells`.
        min_marker_size: See `watershed_cells`.
        merge_threshold: See `watershed_cells`.
        ridges: False keeps `membrane_prob` as it is under the lines.

    Returns:
        float32 membrane probabilities of the same shape as `membrane_prob`.

    Raises:
        ValueError: As `watershed_cells`.
    """
    _check_parameters(marker_threshold, min_marker_size, merge_threshold)
    prob = as_membrane_slices(membrane_prob, np.float32)
    labels = _watershed(prob, marker_threshold, min_marker_size, merge_threshold)
    return draw_lines(labels, ridge_membranes(membrane_prob) if ridges else membrane_prob)
