"""Shared fixtures. TensorFlow is the default backend; `make test` also runs the
tests marked `backends` with KERAS_BACKEND=torch."""

import contextlib
import functools
import os
import threading
import warnings
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from unet_keras.datasets import download_isbi2012, load_isbi2012  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "isbi2012"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def gap_and_specks():
    """Two cells split by a membrane (columns 31-32) whose rows 28-35 are faint
    (p = 0.5), and in each cell four closed rings around 4x4 specks that look
    like interior (16 pixels each).

    No single threshold is right: below 0.5 the gap merges the cells, above it
    each speck is a segment of its own. The ground truth has only the membrane.
    """
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 31:33] = 1
    prob = np.where(mask == 1, 0.95, 0.02).astype(np.float32)
    prob[28:36, 31:33] = 0.5
    for y in (8, 44):
        for x in (6, 18, 38, 50):
            prob[y : y + 6, x : x + 6] = 0.9  # a ring ...
            prob[y + 1 : y + 5, x + 1 : x + 5] = 0.02  # ... around a speck
    return prob, mask


@pytest.fixture
def lopsided_membrane():
    """Two cells split by a true membrane (columns 31-32) that the map draws
    with its crest on it and a shoulder fading into the right cell: at every
    threshold the band reaches further right, so the scoring's thinning puts
    its line on the right cell's interior."""
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 31:33] = 1
    prob = np.full((64, 64), 0.02, np.float32)
    prob[:, 31:33] = 0.97
    prob[:, 33:38] = [0.95, 0.93, 0.91, 0.6, 0.4]
    return prob, mask


@pytest.fixture
def functions_run_eagerly():
    """TensorFlow runs Keras's training and prediction functions eagerly, for
    tests of what a run does around its steps (stopping, resuming), not of the
    compiled steps themselves, which the other training tests cover.

    Tracing those functions is most of a tiny run's time: 2.5x less without it
    (36 s against 14 s on the 2-core Zen 1 machine of December 2026). The only
    TensorFlow call of the tests; a no-op on the other backends.
    """
    if os.environ["KERAS_BACKEND"] != "tensorflow":
        yield
        return
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    try:
        with warnings.catch_warnings():  # tf.data's functions stay traced, as they should
            warnings.filterwarnings("ignore", "Even though the `tf.config.experimental_run")
            yield
    finally:
        tf.config.run_functions_eagerly(False)


@pytest.fixture(scope="session")
def isbi_mirror():
    """The local byte-exact mirror of the ISBI 2012 files (CI always has it)."""
    if not (MIRROR / "SHA256SUMS").is_file():
        pytest.skip(f"the ISBI 2012 mirror is not at {MIRROR}")
    return MIRROR


class _CountingHandler(SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requests += 1
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory):
    """An HTTP server on 127.0.0.1 for `directory`; yields it with its base URL."""
    handler = functools.partial(_CountingHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = 0
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="session")
def mirror_server(isbi_mirror):
    with serve(isbi_mirror) as server:
        yield server


@pytest.fixture(scope="session")
def isbi_data(mirror_server, tmp_path_factory):
    """All 90 files, downloaded once per session from the loopback server."""
    dest = tmp_path_factory.mktemp("isbi2012")
    assert download_isbi2012(dest, base_url=mirror_server.base_url, progress=False) == dest
    return dest


def _misleading_maps(masks, rng, membrane=0.65, lines=12, length=300):
    """Membrane maps of true masks that fool a merging by mean probability:
    every real membrane faint (`membrane`, below the watershed's 0.7) and
    bright false lines (0.9) drawn across the cells, which split them."""
    maps = []
    for mask in masks[..., 0]:
        drawn = np.zeros(mask.shape, np.float32)
        for _ in range(lines):
            x, y = rng.integers(0, mask.shape[1]), rng.integers(0, mask.shape[0])
            angle = rng.uniform(0, np.pi)
            end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
            cv2.line(drawn, (int(x), int(y)), end, 0.9, 2)
        prob = np.maximum(mask * membrane, np.where(mask == 0, drawn, 0))
        maps.append(np.clip(cv2.GaussianBlur(prob, (0, 0), 0.7), 0, 1))
    return np.stack(maps)


@pytest.fixture(scope="session")
def misleading_isbi(isbi_data):
    """Slices 0-7 of ISBI 2012: `(images, masks, maps)`, the maps from
    `_misleading_maps`. A classifier can see through them (the real membranes
    are dark in the image, the false lines are not); one threshold cannot."""
    images, masks = load_isbi2012(isbi_data, split="train")
    maps = _misleading_maps(masks[:8], np.random.default_rng(0))
    return images[:8], masks[:8], maps


@pytest.fixture(scope="session")
def serve_directory():
    """`serve(directory)`: a context manager for a loopback HTTP server."""
    return serve
