"""ISBI 2012 download (from a loopback server and file://) and loading (NumPy only)."""

import errno
import os
import shutil
import socket
import time

import cv2
import numpy as np
import pytest
import tifffile

from unet_keras.datasets import (
    DATA_URL_ENV,
    DownloadError,
    download_isbi2012,
    fetch_verified,
    load_isbi2012,
    manifest,
    sha256sum,
    split_slices,
)

SUBSET = ["train/image/0.png", "train/label/0.png", "test/7.png"]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------
def test_manifest_matches_the_mirror(isbi_mirror):
    sums = manifest()
    assert len(sums) == 90
    expected = {}
    for line in (isbi_mirror / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        expected[name.removeprefix("./")] = digest
    assert sums == expected


def test_download_everything_then_no_io(isbi_data, mirror_server):
    for name, digest in manifest().items():
        assert sha256sum(isbi_data / name) == digest
    assert not list(isbi_data.rglob("*.part"))
    before = mirror_server.requests
    download_isbi2012(isbi_data, base_url=mirror_server.base_url, progress=False)
    assert mirror_server.requests == before


def test_corrupt_file_is_rejected_and_not_kept(isbi_mirror, tmp_path, serve_directory):
    source = tmp_path / "mirror"
    shutil.copytree(isbi_mirror, source)
    bad = source / "train" / "label" / "0.png"
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    with serve_directory(source) as server, pytest.raises(DownloadError) as error:
        download_isbi2012(dest, base_url=server.base_url, progress=False, files=SUBSET)
    message = str(error.value)
    assert "0.png" in message
    assert server.base_url + "train/label/0.png" in message
    assert sha256sum(bad) in message
    assert manifest()["train/label/0.png"] in message
    assert not (dest / "train" / "label" / "0.png").exists()
    assert not list(dest.rglob("*.part"))


def test_existing_wrong_file_is_downloaded_again(isbi_mirror, tmp_path):
    target = tmp_path / "train" / "image" / "0.png"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a png")
    download_isbi2012(tmp_path, base_url=isbi_mirror.as_uri(), progress=False, files=SUBSET)
    for name in SUBSET:
        assert sha256sum(tmp_path / name) == manifest()[name]


def test_unreachable_source_fails_fast_with_a_hint(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/data"
    start = time.monotonic()
    with pytest.raises(DownloadError) as error:
        download_isbi2012(tmp_path, base_url=url, progress=False, files=SUBSET)
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert url + "/train/image/0.png" in message
    assert DATA_URL_ENV in message and "base_url" in message
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_file_url_and_environment_variable(isbi_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_URL_ENV, isbi_mirror.as_uri())  # no trailing slash
    download_isbi2012(tmp_path, progress=False, files=SUBSET)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png")) == sorted(SUBSET)


def test_fetch_verified_missing_file(isbi_mirror, tmp_path):
    with pytest.raises(DownloadError, match="Could not download"):
        fetch_verified((isbi_mirror / "nope.png").as_uri(), tmp_path / "x.png", "0" * 64)
    assert not list(tmp_path.iterdir())


class FullDisk:
    """A file whose writes fail as on a full disk."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_a_local_write_error_is_not_blamed_on_the_source(isbi_mirror, tmp_path, monkeypatch):
    """A full disk names the file it could not write, without the mirror hint
    that a download error gives, and leaves no partial file."""
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    name = "train/image/0.png"
    target = tmp_path / "0.png"
    with pytest.raises(OSError) as error:
        fetch_verified((isbi_mirror / name).as_uri(), target, manifest()[name])
    assert not isinstance(error.value, DownloadError)
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(target)
    assert "No space left on device while saving file://" in error.value.strerror
    assert DATA_URL_ENV not in str(error.value)
    assert not list(tmp_path.iterdir())


def test_download_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="http"):
        download_isbi2012(tmp_path, base_url="ftp://example.org/", files=SUBSET)
    with pytest.raises(ValueError, match="Unknown ISBI 2012 files"):
        download_isbi2012(tmp_path, base_url="file:///nowhere/", files=["train/0.png"])


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------
def test_load_train_and_test(isbi_mirror):
    images, masks = load_isbi2012(isbi_mirror)
    assert images.shape == masks.shape == (30, 512, 512, 1)
    assert images.dtype == masks.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(np.unique(masks)) == {0.0, 1.0}
    assert masks.mean() == pytest.approx(0.22, abs=0.01)
    first = cv2.imread(str(isbi_mirror / "train" / "label" / "0.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(masks[0, ..., 0], first == 0)
    test = load_isbi2012(isbi_mirror, split="test")
    assert test.shape == (30, 512, 512, 1) and test.dtype == np.float32


def _write_pngs(folder, values):
    folder.mkdir(parents=True, exist_ok=True)
    for i, value in enumerate(values):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((8, 8), value, np.uint8))


def test_slices_sorted_numerically(tmp_path):
    _write_pngs(tmp_path / "train" / "image", range(12))
    _write_pngs(tmp_path / "train" / "label", [0, 255] * 6)
    images, masks = load_isbi2012(tmp_path)
    np.testing.assert_allclose(images[:, 0, 0, 0] * 255, np.arange(12), atol=1e-4)
    np.testing.assert_array_equal(masks[:, 0, 0, 0], [1, 0] * 6)


def test_load_tiff_stacks(tmp_path, rng):
    volume = rng.integers(0, 256, (3, 16, 20), dtype=np.uint8)
    labels = np.where(rng.random((3, 16, 20)) < 0.3, 0, 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "train-volume.tif", volume)
    tifffile.imwrite(tmp_path / "train-labels.tif", labels)
    tifffile.imwrite(tmp_path / "test-volume.tif", volume[:2])
    images, masks = load_isbi2012(tmp_path)
    assert images.shape == masks.shape == (3, 16, 20, 1)
    np.testing.assert_allclose(images[..., 0], volume / 255.0, atol=1e-6)
    np.testing.assert_array_equal(masks[..., 0], labels == 0)
    assert load_isbi2012(tmp_path, "test").shape == (2, 16, 20, 1)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_isbi2012(tmp_path, split="val")
    with pytest.raises(FileNotFoundError, match="download_isbi2012"):
        load_isbi2012(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="train-volume.tif"):
        load_isbi2012(tmp_path)

    _write_pngs(tmp_path / "train" / "image", range(3))
    _write_pngs(tmp_path / "train" / "label", [0, 255])
    with pytest.raises(ValueError, match="3 images .* 2 labels"):
        load_isbi2012(tmp_path)

    cv2.imwrite(str(tmp_path / "train" / "label" / "2.png"), np.full((8, 8), 128, np.uint8))
    with pytest.raises(ValueError, match=r"2\.png must be binary .* found the values 128"):
        load_isbi2012(tmp_path)

    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 2] = 200
    cv2.imwrite(str(tmp_path / "train" / "image" / "1.png"), colour)
    with pytest.raises(ValueError, match=r"1\.png is a colour \(RGB\) image"):
        load_isbi2012(tmp_path)


def test_load_downloaded_copy(isbi_data):
    test = load_isbi2012(isbi_data, split="test")
    assert test.shape == (30, 512, 512, 1)


# ---------------------------------------------------------------------------
# Split
# ---------------------------------------------------------------------------
def test_split_slices():
    train, val = split_slices()
    np.testing.assert_array_equal(train, np.arange(25))
    np.testing.assert_array_equal(val, np.arange(25, 30))
    train, val = split_slices(10, val=[7, 2])
    assert val.tolist() == [2, 7] and len(train) == 8 and train.dtype == np.int64
    for bad in ([], [30], [1, 1], list(range(30))):
        with pytest.raises(ValueError):
            split_slices(30, val=bad)
    with pytest.raises(ValueError):
        split_slices(1, val=[0])
