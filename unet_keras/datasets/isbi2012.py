"""The ISBI 2012 EM segmentation data: download, load, and split.

30 training slices (512x512, 8-bit) of serial-section TEM of the Drosophila
larva ventral nerve cord with their membrane labels, and 30 test slices whose
labels were never released. The files are fetched from the `data/membrane/`
folder of the public zhixuhao/unet repository (or any mirror with the same
layout) and checked against sha256 sums that ship with this package.

Terms of the data: free for non-commercial segmentation research; cite
Cardona et al. 2010 (PLoS Biol 8(10): e1000502) and Arganda-Carreras et al.
2015 (Front. Neuroanat. 9:142).
"""

import hashlib
import http.client
import os
import tempfile
import urllib.parse
import urllib.request
from importlib import resources
from pathlib import Path

import numpy as np
from tqdm import tqdm

from unet_keras.io import (
    list_images,
    membrane_mask_from_labels,
    read_image,
    read_stack,
    to_unit_range,
)

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/zhixuhao/unet/master/data/membrane/"
DATA_URL_ENV = "UNET_KERAS_DATA_URL"
TIMEOUT = 10.0
SPLITS = ("train", "test")
TIFF_FILES = {"train": ("train-volume.tif", "train-labels.tif"), "test": ("test-volume.tif",)}

_MANIFEST = "isbi2012_sha256.txt"
_SCHEMES = ("http", "https", "file")
_HOW_TO_DOWNLOAD = (
    "Download it first with `unet_keras.datasets.download_isbi2012(dest)` "
    "or `python -m unet_keras download`."
)


class DownloadError(RuntimeError):
    """A file could not be fetched, or its content is not the expected one."""


# ---------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------
def manifest():
    """The sha256 sums of the 90 ISBI 2012 files shipped with the package.

    Returns:
        A dict mapping relative paths (`"train/image/0.png"`, ...) to
        lowercase hex sha256 sums.
    """
    text = resources.files(__package__).joinpath(_MANIFEST).read_text()
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().removeprefix("./")] = digest.lower()
    return sums


def sha256sum(path):
    """Hex sha256 of a file."""
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _resolve_base_url(base_url):
    """The base URL to use, with a trailing slash; a local folder becomes a
    file:// URL."""
    if base_url is None:
        base_url = os.environ.get(DATA_URL_ENV) or DEFAULT_BASE_URL
    base_url = str(base_url)
    scheme = urllib.parse.urlsplit(base_url).scheme
    if not scheme and Path(base_url).is_dir():
        base_url = Path(base_url).resolve().as_uri()
    elif scheme not in _SCHEMES:
        raise ValueError(
            f"`base_url` must be an http://, https:// or file:// URL (or an existing "
            f"local folder), got {base_url!r}."
        )
    return base_url if base_url.endswith("/") else base_url + "/"


def _mirror_hint():
    return (
        "If this source is unreachable or wrong, download from a mirror with the same "
        "layout: pass `base_url=` (http(s):// or file://) to download_isbi2012, or set "
        f"the environment variable {DATA_URL_ENV}, e.g. "
        f"`export {DATA_URL_ENV}=file:///path/to/isbi2012/`."
    )


def fetch_verified(url, target, sha256, timeout=TIMEOUT):
    """Downloads one file and moves it to `target` only if its sha256 matches.

    The file is streamed to a temporary name next to `target`, so an
    interrupted or corrupt download never sits under the final name.

    Args:
        url: http(s):// or file:// URL of the file.
        target: Final path of the file.
        sha256: Expected hex sha256 of the content.
        timeout: Socket timeout in seconds.

    Returns:
        `target` as a `pathlib.Path`.

    Raises:
        DownloadError: If the URL cannot be read, or the content has another
            sha256 (the message names the file, both sums and the URL).
        OSError: If the file cannot be written here (a full disk, no
            permission); its `filename` is the local path.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        hasher = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            _copy(url, out, hasher, timeout, target)
        actual = hasher.hexdigest()
        if actual != sha256.lower():
            raise DownloadError(
                f"The download of {target.name} from {url} is corrupt or not the "
                f"expected file: sha256 {actual}, expected {sha256.lower()}. "
                f"It was not kept. {_mirror_hint()}"
            )
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def _copy(url, out, hasher, timeout, target):
    """Streams `url` into the open file `out`. Only a failure to read the URL is
    the source's (a `DownloadError` with the mirror hint); a failure to write is
    this machine's, reported with the file that could not be written."""
    network_errors = (OSError, http.client.HTTPException)  # URLError is an OSError
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except network_errors as error:
        raise _download_error(url, error) from error
    with response:
        while True:
            try:
                chunk = response.read(1 << 16)
            except network_errors as error:
                raise _download_error(url, error) from error
            if not chunk:
                return
            hasher.update(chunk)
            try:
                out.write(chunk)
                out.flush()  # so that closing the file has nothing left to fail on
            except OSError as error:
                raise OSError(
                    error.errno, f"{error.strerror or error} while saving {url} (free some "
                    "space or download to another folder)", str(target),
                ) from error


def _download_error(url, error):
    reason = getattr(error, "reason", error)
    return DownloadError(f"Could not download {url}: {reason}. {_mirror_hint()}")


def download_isbi2012(
    dest="data/isbi2012", base_url=None, progress=True, *, files=None, timeout=TIMEOUT
):
    """Downloads the ISBI 2012 training and test slices, checked by sha256.

    Fetches `train/image/{0..29}.png`, `train/label/{0..29}.png` and
    `test/{0..29}.png` from `base_url` + relative path. Files already in
    `dest` with the right sha256 are kept, so a second call does no network
    I/O; a file with a wrong sha256 is deleted and downloaded again. Nothing
    is ever moved into `dest` before its sha256 has been checked.

    `keras.utils.get_file` is not used because it has no timeout, keeps a
    download whose hash does not match, and prints a progress bar per file.

    Args:
        dest: Folder to download into.
        base_url: URL of the folder holding `train/` and `test/`; http(s)://
            and file:// work, and a local folder path too. None uses the
            environment variable `UNET_KERAS_DATA_URL`, else `DEFAULT_BASE_URL`.
        progress: Show a progress bar over the files.
        files: Relative paths of a subset of the files to fetch (all 90 by
            default).
        timeout: Socket timeout in seconds, so an unreachable source fails
            quickly.

    Returns:
        `dest` as a `pathlib.Path`.

    Raises:
        DownloadError: If a file cannot be fetched or has a wrong sha256.
    """
    sums = manifest()
    if files is not None:
        unknown = sorted(set(files) - set(sums))
        if unknown:
            raise ValueError(f"Unknown ISBI 2012 files {unknown}; known files look like "
                             "'train/image/0.png', 'train/label/0.png', 'test/0.png'.")
        sums = {name: sums[name] for name in files}
    dest = Path(dest)

    missing = []
    for name, digest in sums.items():
        path = dest / name
        if path.is_file():
            if sha256sum(path) == digest:
                continue
            path.unlink()  # never keep a file that does not match
        missing.append(name)
    if not missing:
        return dest

    base_url = _resolve_base_url(base_url)
    bar = tqdm(missing, desc=f"ISBI 2012 from {base_url}", unit="file", disable=not progress)
    for name in bar:
        fetch_verified(base_url + name, dest / name, sums[name], timeout=timeout)
    return dest


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------
def _load_pngs(root, split):
    if split == "test":
        return to_unit_range(read_stack(root / "test")), None
    image_paths = list_images(root / "train" / "image")
    label_paths = list_images(root / "train" / "label")
    if [p.name for p in image_paths] != [p.name for p in label_paths]:
        raise ValueError(
            f"The {len(image_paths)} images in {root / 'train' / 'image'} and the "
            f"{len(label_paths)} labels in {root / 'train' / 'label'} do not pair up by "
            "file name; every image needs a label of the same name."
        )
    images = read_stack(root / "train" / "image")
    masks = []
    for path, image in zip(label_paths, images):
        label = read_image(path)
        if label.shape != image.shape:
            raise ValueError(f"{path}: label shape {label.shape} != image {image.shape}.")
        masks.append(membrane_mask_from_labels(label, source=str(path)))
    return to_unit_range(images), np.stack(masks)


def _load_tiffs(root, split):
    images = read_stack(root / TIFF_FILES[split][0])
    if split == "test":
        return to_unit_range(images), None
    label_path = root / TIFF_FILES[split][1]
    labels = read_stack(label_path)
    if labels.shape != images.shape:
        raise ValueError(
            f"{label_path} holds labels of shape {labels.shape} but the images are "
            f"{images.shape}; they must match slice for slice."
        )
    return to_unit_range(images), membrane_mask_from_labels(labels, source=str(label_path))


def load_isbi2012(root="data/isbi2012", split="train"):
    """Loads ISBI 2012 slices as float32 arrays.

    Reads the PNG layout that `download_isbi2012` writes (`train/image`,
    `train/label`, `test`), or the original challenge TIFF stacks
    (`train-volume.tif`, `train-labels.tif`, `test-volume.tif`) when `root`
    holds those instead. PNG slices are ordered by their numeric name.

    Args:
        root: Folder holding the data.
        split: `"train"` or `"test"`.

    Returns:
        For `"train"`, a tuple `(images, masks)`: images `(N, H, W, 1)` in
        [0, 1] and membrane masks `(N, H, W, 1)` with 1 = membrane and
        0 = cell interior (the files store 0 = membrane, 255 = interior).
        For `"test"`, the images only. Both float32.

    Raises:
        ValueError: For a bad split, colour images, labels with values other
            than 0 and 255, or images and labels that do not pair up.
        FileNotFoundError: If `root` holds neither layout.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"No ISBI 2012 data at {root} (no such folder). {_HOW_TO_DOWNLOAD}")
    png_folder = root / ("train/image" if split == "train" else "test")
    if png_folder.is_dir():
        images, masks = _load_pngs(root, split)
    elif (root / TIFF_FILES[split][0]).is_file():
        images, masks = _load_tiffs(root, split)
    else:
        raise FileNotFoundError(
            f"No ISBI 2012 {split} data in {root}: expected the folder {png_folder} or the "
            f"TIFF stack(s) {', '.join(TIFF_FILES[split])}. {_HOW_TO_DOWNLOAD}"
        )
    images = images[..., None]
    return images if masks is None else (images, masks[..., None])


def split_slices(n=30, val=(25, 26, 27, 28, 29)):
    """Held-out validation by whole slice.

    Neighbouring slices of a stack look alike, so validation tiles must come
    from slices never seen in training rather than from random pixels or
    tiles; the default keeps the last five of the 30 training slices.

    Args:
        n: Number of slices.
        val: Indices of the validation slices.

    Returns:
        A tuple `(train_idx, val_idx)` of sorted int64 arrays.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"`n` must be an integer >= 2, got {n!r}.")
    val_idx = np.asarray(val)
    if val_idx.ndim != 1 or val_idx.size == 0 or not np.issubdtype(val_idx.dtype, np.integer):
        raise ValueError(f"`val` must be a non-empty sequence of slice indices, got {val!r}.")
    bad = val_idx[(val_idx < 0) | (val_idx >= n)]
    if bad.size:
        raise ValueError(f"`val` indices {bad.tolist()} are outside 0..{n - 1}.")
    if np.unique(val_idx).size != val_idx.size:
        raise ValueError(f"`val` has repeated indices: {val!r}.")
    if val_idx.size >= n:
        raise ValueError("`val` holds every slice; leave at least one for training.")
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return train_idx.astype(np.int64), np.sort(val_idx).astype(np.int64)
