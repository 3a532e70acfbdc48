"""Fixtures shared by the whole suite.

MongoDB: every test that needs it gets ``mongo_url``. With ``MONGO_URL`` set it is
that server (a real ``mongod``); otherwise one embedded nx-27017 server is started on
loopback for the session. Each test gets its own database name, so tests never see
each other's jobs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.store import Store, connect
from shared.store.embedded import start_embedded

ROOT = Path(__file__).resolve().parents[1]


def _find_data_dir() -> Path | None:
    candidates = [
        os.environ.get("STRIX_DATA_DIR"),
        ROOT.parent / "shared" / "data" / "fashion-mnist",
        "/usr/share/datasets/fashion-mnist",
    ]
    for c in candidates:
        if c and (Path(c) / "train-labels-idx1-ubyte.gz").exists():
            return Path(c)
        if c and (Path(c) / "train-labels-idx1-ubyte").exists():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real Fashion-MNIST idx files; the suite refuses to run without them."""
    found = _find_data_dir()
    if found is None:
        pytest.fail(
            "Fashion-MNIST not found: set STRIX_DATA_DIR, put the idx files in "
            "../shared/data/fashion-mnist, or `apt-get install dataset-fashion-mnist`."
        )
    return found


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a MongoDB server: ``$MONGO_URL`` or an embedded nx-27017."""
    if os.environ.get("MONGO_URL"):
        yield os.environ["MONGO_URL"]
        return
    server = start_embedded(tmp_path_factory.mktemp("nx"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def db_name() -> str:
    """A fresh database name per test, so concurrent tests never share jobs."""
    return f"strix_test_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def mongo_url(mongo_server: str) -> str:
    return mongo_server


@pytest.fixture
def store(mongo_url: str, db_name: str) -> Iterator[Store]:
    """A connected store on a fresh database, dropped after the test."""
    s = connect(mongo_url, db_name)
    s.create_indexes()
    yield s
    s.client.drop_database(db_name)
    s.close()
