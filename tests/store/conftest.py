"""Fixtures of the store's tests (hyperopt's API included)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For tests that call ``MongoWorker.run_one``: like hyperopt's, it makes a working
    directory per job under the current one, which must not be the checkout."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
