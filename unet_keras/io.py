"""Reading and writing image stacks: a folder of PNGs or a TIFF stack in,
float32 TIFF stacks out; and images with their masks, ready for training
(`load_image_mask_pairs`)."""

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
                f"{source} is a colour (RGB) image, read here as gray. Read it with "
                "`channels=3` for a model of three input channels, or convert it, e.g. "
                "with cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)."
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


def _stack_slices(slices, files, folder):
    """The slices of a folder's `files` as one array, refused where their
    sizes or bit depths differ."""
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise ValueError(f"The images in {folder} have different sizes: {sorted(shapes)}.")
    _check_one_dtype(slices, files, folder)
    return np.stack(slices)


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


def read_stack(path, channels=1):
    """Reads a folder of images or a (multi-page) TIFF as an (N, H, W) array.

    Args:
        path: A folder of PNG/TIFF files (read in slice order: 2 before 10),
            a TIFF stack file, or one image file (a stack of one slice).
        channels: 1 for gray images; 3 for colour ones, read in RGB order
            (OpenCV's BGR turned around, an alpha channel dropped) as
            `(N, H, W, 3)`, gray images as three equal channels.

    Returns:
        The stack with its stored dtype.

    Raises:
        FileNotFoundError: If the path does not exist or holds no image.
        ValueError: For colour images with `channels=1`, slices of different
            sizes or bit depths, or a file that is not a readable image.
    """
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 (gray) or 3 (RGB), got {channels!r}.")
    path = Path(path)
    if channels == 3:
        return _read_rgb_stack(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: give a folder of PNGs or a TIFF stack.")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise FileNotFoundError(f"{path} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
        return _stack_slices([read_image(f) for f in files], files, path)
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


def _read_rgb_stack(path):
    """A folder of images, a TIFF stack or one image as RGB `(N, H, W, 3)`,
    stored dtype."""
    if not path.exists() or (path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES):
        read_stack(path)  # raises read_stack's error: no such path, or not an image
    if path.is_file():
        if path.suffix.lower() in TIFF_SUFFIXES:
            return _read_rgb_tiff(path)
        return _read_rgb_image(path)[None]
    files = list_images(path)
    if not files:
        read_stack(path)  # raises read_stack's error: the folder holds no image
    return _stack_slices([_read_rgb_image(f) for f in files], files, path)


def _read_rgb_image(path):
    """One image file as RGB `(H, W, 3)`: OpenCV reads BGR(A), tifffile RGB."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        pages = _read_rgb_tiff(path)
        if len(pages) != 1:
            raise ValueError(
                f"{path} holds {len(pages)} pages: in a folder, give one image per file."
            )
        return pages[0]
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"OpenCV cannot read {path}: not an image, or a corrupt file.")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:  # gray: three equal channels
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return array[..., 2::-1]  # BGR(A) to RGB
    raise ValueError(f"{path} has shape {array.shape}; expected a gray or colour image.")


def _read_rgb_tiff(path):
    """A TIFF file as RGB pages `(N, H, W, 3)`; gray pages as three equal channels."""
    stack, axes = _read_tiff(path)
    if axes.endswith("S") and stack.shape[-1] in (3, 4):  # "S": a pixel's samples
        return stack[..., :3].reshape(-1, *stack.shape[-3:-1], 3)
    return read_stack(path)[..., None].repeat(3, axis=-1)  # gray: read and checked as such


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


def membrane_mask_from_labels(labels, source="labels", positive_label=0):
    """Turns binary labels, 0 and 255, into a float32 mask of the class the
    network predicts: by default ISBI 2012's, 0 = membrane and 255 = interior.

    Args:
        labels: Labels of the values 0 and 255.
        source: Where the labels come from, for the error message.
        positive_label: The value of the predicted class: 0 for ISBI 2012's
            labels (the membranes), 255 for masks that mark their foreground
            white.

    Returns:
        1 where `labels == positive_label`, 0 elsewhere.

    Raises:
        ValueError: If the labels hold values other than 0 and 255.
    """
    values = np.unique(labels)
    if not set(values.tolist()) <= {0, 255}:
        shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        meaning = ("0 = membrane and 255 = cell interior" if positive_label == 0
                   else f"{positive_label} = the class the network predicts")
        raise ValueError(
            f"{source} must be binary with {meaning}; found the values {shown}. Threshold "
            "the labels first (masks of 0 and 1: multiply them by 255)."
        )
    return (np.asarray(labels) == positive_label).astype("float32")


def write_stack(path, stack):
    """Writes an (N, H, W) float32 TIFF stack, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.asarray(stack, dtype="float32"))
    return path


def _first_file(path):
    """The first slice's file of a folder, or None for a stack file."""
    path = Path(path)
    return list_images(path)[0].name if path.is_dir() else None


def _check_pairs(images, masks, images_path, masks_path):
    """Refuses image and mask stacks that do not pair up slice by slice."""
    if len(images) != len(masks):
        raise ValueError(
            f"{images_path} holds {len(images)} image(s) and {masks_path} {len(masks)} "
            "mask(s): give exactly one mask per image (they are paired in slice order)."
        )
    if images.shape[1:3] != masks.shape[1:3]:
        # read_stack gives every slice of a stack one size, so the first pair differs.
        names = (_first_file(images_path), _first_file(masks_path))
        first = f" (first: {names[0]} and {names[1]})" if all(names) else " (from slice 0 on)"
        raise ValueError(
            f"The images in {images_path} are {images.shape[1]}x{images.shape[2]} pixels, "
            f"the masks in {masks_path} {masks.shape[1]}x{masks.shape[2]}{first}: every "
            "mask must have the size of its image."
        )


def _binary_masks(masks, source="masks"):
    """Turns two-valued masks into float32 0/1 masks: any nonzero value is foreground.

    Accepts 0/1, 0/255 and 0/65535 masks (and any other single foreground
    value, or a bool stack).

    Args:
        masks: A mask stack, e.g. from `read_stack`.
        source: Where the masks come from, for error messages.

    Returns:
        float32 masks of the same shape, 1 = foreground.

    Raises:
        ValueError: For more than two distinct values (anti-aliased or
            smoothed masks), or two values of which none is 0.
    """
    masks = np.asarray(masks)
    values = np.unique(masks)
    if len(values) > 2:
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if len(values) > 6 else "")
        raise ValueError(
            f"{source} must hold two values, background 0 and one foreground value, but hold "
            f"{len(values)} ({shown}): they look anti-aliased or smoothed (e.g. resized with "
            "interpolation or saved as JPEG). Threshold them yourself, e.g. "
            "`masks > 0.5 * masks.max()`, or save them without smoothing (PNG or TIFF)."
        )
    if len(values) == 2 and values[0] != 0 and values[1] != 0:
        raise ValueError(
            f"{source} hold the values {values[0]:g} and {values[1]:g}, no 0: the "
            "background must be 0 and the foreground any other value. Map them first, "
            f"e.g. `masks == {values[1]:g}` for {values[1]:g} as the foreground."
        )
    return (masks != 0).astype("float32")


def load_image_mask_pairs(images_path, masks_path, channels=1):
    """Reads images and their binary masks for training, ready for `TileDataset`.

    Both are read with `read_stack` (folders of images in slice order, or
    TIFF stacks) and paired in slice order. The images are scaled to [0, 1]
    with `to_unit_range`. In the masks any nonzero value is foreground, so
    0/1, 0/255 and 0/65535 masks all work; masks with more values
    (anti-aliased) are refused. For masks that mark the foreground with 0,
    as ISBI 2012's labels mark the membranes, use `1 - masks`.

    Args:
        images_path: A folder of images or a TIFF stack.
        masks_path: A folder of masks or a TIFF stack, one mask per image,
            each of its image's size.
        channels: 1 to read the images as gray, 3 as RGB (for
            `build_unet(input_shape=(None, None, 3))`).

    Returns:
        A tuple `(images, masks)` of float32 arrays: images
        `(N, H, W, channels)` in [0, 1], masks `(N, H, W, 1)`, 0/1.

    Raises:
        FileNotFoundError: If a path does not exist or holds no image.
        ValueError: If the counts or sizes differ (the message names both
            paths), for masks with more than two values, or for anything
            `read_stack` and `to_unit_range` refuse.
    """
    images, masks = read_stack(images_path, channels=channels), read_stack(masks_path)
    _check_pairs(images, masks, images_path, masks_path)
    images = to_unit_range(images)
    masks = _binary_masks(masks, source=f"The masks in {masks_path}")
    return (images[..., None] if channels == 1 else images), masks[..., None]
