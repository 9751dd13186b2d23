from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import standin

from normlab.bench import train


@pytest.fixture(autouse=True)
def models(monkeypatch):
    """The real models when normlab.models exists, else the stand-in."""
    if not standin.real_models_available():
        monkeypatch.setattr(train, "build_model", standin.build)


@pytest.fixture
def cache_dir(tmp_path_factory):
    """One corpus cache for the session (building the stdlib corpus takes a second)."""
    return str(tmp_path_factory.getbasetemp() / "corpus-cache")
