"""Shared fixtures. TensorFlow is the default backend; `make test` also runs the
tests marked `backends` with KERAS_BACKEND=torch."""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "isbi2012"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def isbi_mirror():
    """The local byte-exact mirror of the ISBI 2012 files (CI always has it)."""
    if not (MIRROR / "SHA256SUMS").is_file():
        pytest.skip(f"the ISBI 2012 mirror is not at {MIRROR}")
    return MIRROR
