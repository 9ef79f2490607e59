"""Datasets: the ISBI 2012 EM segmentation challenge data."""

from unet_keras.datasets.isbi2012 import (
    DATA_URL_ENV,
    DEFAULT_BASE_URL,
    DownloadError,
    download_isbi2012,
    fetch_verified,
    load_isbi2012,
    manifest,
    sha256sum,
    split_slices,
)

__all__ = [
    "DATA_URL_ENV",
    "DEFAULT_BASE_URL",
    "DownloadError",
    "download_isbi2012",
    "fetch_verified",
    "load_isbi2012",
    "manifest",
    "sha256sum",
    "split_slices",
]
