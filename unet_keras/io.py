"""Reading and writing image stacks: a folder of PNGs or a TIFF stack in,
float32 TIFF stacks out."""

import re
from pathlib import Path

import cv2
import numpy as np
import tifffile

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")


def _slice_order(path):
    """Sorts 2.png before 10.png: by the numbers in the name, then the name."""
    numbers = [int(n) for n in re.findall(r"\d+", path.stem)]
    return numbers, path.name


def list_images(folder):
    """The image files of a folder in slice order."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_slice_order)


def _check_gray(array, source):
    """The (H, W) gray image of `array`: (H, W), (H, W, 1), or gray stored as
    equal colour channels (H, W, 3 or 4)."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        channels = array[..., :3]
        if not (np.array_equal(channels[..., 0], channels[..., 1])
                and np.array_equal(channels[..., 0], channels[..., 2])):
            raise ValueError(
                f"{source} is a colour (RGB) image; the U-Net expects one gray channel. "
                "Convert it, e.g. with cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)."
            )
        array = channels[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{source} has shape {array.shape}; expected a 2-D gray image.")
    return array


def _read_tiff(path):
    """A TIFF file's first series and its axes (tifffile's letters: "S" = colour)."""
    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            return np.asarray(series.asarray()), series.axes
    except tifffile.TiffFileError as error:
        raise ValueError(f"{path} is not a readable TIFF file ({error}).") from error


def read_image(path):
    """Reads one gray image as stored (uint8/uint16/float), shape (H, W)."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        array, _ = _read_tiff(path)
    else:
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise ValueError(f"OpenCV cannot read {path}: not an image, or a corrupt file.")
    return _check_gray(np.asarray(array), path)


def _check_one_dtype(slices, files, folder):
    """Refuses a folder mixing dtypes: np.stack would promote 8-bit slices to
    16 bits, and `to_unit_range` would then scale their white to 255/65535."""
    first = {}
    for image, file in zip(slices, files):
        first.setdefault(image.dtype, file.name)
    if len(first) > 1:
        found = ", ".join(f"{dtype} (e.g. {name})" for dtype, name in first.items())
        raise ValueError(
            f"The images in {folder} have different bit depths: {found}. "
            "Save them all with one bit depth."
        )


def read_stack(path):
    """Reads a folder of images or a (multi-page) TIFF as an (N, H, W) array.

    Args:
        path: A folder of PNG/TIFF files (read in slice order: 2 before 10),
            a TIFF stack file, or one image file (a stack of one slice).

    Returns:
        The stack with its stored dtype.

    Raises:
        FileNotFoundError: If the path does not exist or holds no image.
        ValueError: For colour images, slices of different sizes or bit
            depths, or a file that is not a readable image.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: give a folder of PNGs or a TIFF stack.")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise FileNotFoundError(f"{path} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
        slices = [read_image(f) for f in files]
        shapes = {s.shape for s in slices}
        if len(shapes) > 1:
            raise ValueError(f"The images in {path} have different sizes: {sorted(shapes)}.")
        _check_one_dtype(slices, files, path)
        return np.stack(slices)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return read_image(path)[None]
        raise ValueError(
            f"{path} is not an image file ({', '.join(IMAGE_SUFFIXES)}): give a folder of "
            "images or a TIFF stack."
        )
    stack, axes = _read_tiff(path)
    # A trailing channel of one sample, (H, W, 1) or (N, H, W, 1), is gray; it
    # would otherwise pass for H slices of W x 1 pixels. An "X" last is a
    # real width of 1 pixel.
    if stack.ndim >= 3 and stack.shape[-1] == 1 and not axes.endswith("X"):
        stack, axes = stack[..., 0], axes[:-1]
    # One colour page is (H, W, 3) and would pass for H slices of W x 3 pixels;
    # tifffile's axes tell them apart ("S" last: samples of one pixel).
    if stack.ndim == 2 or (stack.ndim == 3 and axes.endswith("S")):
        stack = stack[None]
    if stack.ndim == 4:
        stack = np.stack([_check_gray(s, f"{path} page {i}") for i, s in enumerate(stack)])
    if stack.ndim != 3:
        raise ValueError(f"{path} has shape {stack.shape}; expected (slices, H, W).")
    return stack


def to_unit_range(stack):
    """Scales an integer stack to float32 in [0, 1] (by its dtype's maximum).

    Raises:
        ValueError: For negative values (a signed integer stack), floats
            outside [0, 1] (rescale such images to [0, 1] first) or NaN.
    """
    stack = np.asarray(stack)
    if np.issubdtype(stack.dtype, np.integer):
        if stack.size and stack.min() < 0:
            raise ValueError(
                f"Integer images must not be negative, got values down to {stack.min()} "
                f"({stack.dtype}). Rescale them to [0, 1] as floats first."
            )
        return (stack / np.iinfo(stack.dtype).max).astype("float32")
    stack = stack.astype("float32")
    if not stack.size:
        return stack
    # NaN compares False with everything, so the range check below lets it pass.
    missing = int(np.isnan(stack).sum())
    if missing:
        raise ValueError(
            f"Float images must not hold NaN, found {missing} NaN pixel(s). "
            "Fill them (e.g. np.nan_to_num(stack, nan=0.0)) first."
        )
    if stack.min() < 0 or stack.max() > 1:
        raise ValueError(
            f"Float images must lie in [0, 1], got values in [{stack.min()}, {stack.max()}]."
        )
    return stack


def membrane_mask_from_labels(labels, source="labels"):
    """Turns ISBI-style labels (0 = membrane, 255 = interior) into a float32
    membrane mask (1 = membrane, 0 = interior).

    Raises:
        ValueError: If the labels hold values other than 0 and 255.
    """
    values = np.unique(labels)
    if not set(values.tolist()) <= {0, 255}:
        shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        raise ValueError(
            f"{source} must be binary with 0 = membrane and 255 = cell interior; "
            f"found the values {shown}. Threshold the labels first."
        )
    return (np.asarray(labels) == 0).astype("float32")


def write_stack(path, stack):
    """Writes an (N, H, W) float32 TIFF stack, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.asarray(stack, dtype="float32"))
    return path
