from __future__ import annotations

import pytest


@pytest.fixture
def cache_dir(tmp_path_factory):
    """One corpus cache for the session (building the stdlib corpus takes a second)."""
    return str(tmp_path_factory.getbasetemp() / "corpus-cache")
