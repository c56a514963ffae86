"""Fixtures shared by the emulator's unit tests."""

from __future__ import annotations

import pytest

from tests.conftest import TLSFiles, make_tls_files


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 (made once per test module)."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))
