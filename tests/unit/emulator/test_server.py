"""``emulator.server`` keeps every name it has always exported, whichever module now defines it."""

from __future__ import annotations

import importlib

import pytest

#: The public names ``server.py`` defined before it was split by concern.
OLD_NAMES = [
    "NO_ACCESS",
    "INVALID_URL",
    "BAD_REQUEST",
    "TOKEN_EXPIRED",
    "RATE_LIMITED",
    "INTERNAL_ERROR",
    "INVALID_API_KEY",
    "COINS_NOT_ENOUGH",
    "ERRORS",
    "JOB_COST",
    "DEFAULT_RESULT_TTL",
    "UPLOAD_TTL",
    "MAX_URL_LENGTH",
    "MAX_FETCH_BYTES",
    "MAX_REDIRECTS",
    "KEY_STATES",
    "UPLOAD_CONTENT_TYPES",
    "OSS_EXPIRE_DEFAULT",
    "OSS_EXPIRE_MIN",
    "OSS_EXPIRE_MAX",
    "OSS_BATCH_MAX",
    "PATH_SUBMIT",
    "PATH_STATUS",
    "PATH_PRESIGN",
    "PATH_PRESIGN_BATCH",
    "RESULT_FILES",
    "EmulatorConfig",
    "Job",
    "StoredObject",
    "Presign",
    "FetchError",
    "hitpaw_error",
    "hitpaw_ok",
    "oss_error",
    "validate_file_url",
    "Emulator",
    "FaultLike",
    "EmulatorServer",
]


@pytest.mark.parametrize("name", OLD_NAMES)
def test_old_names_still_import(name: str) -> None:
    server = importlib.import_module("airflow_provider_hitpaw.emulator.server")
    assert name in server.__all__
    assert getattr(server, name) is not None


def test_the_values_are_hitpaws() -> None:
    from airflow_provider_hitpaw.emulator import server

    assert server.ERRORS[server.COINS_NOT_ENOUGH] == (402, "The coins are not enough")
    assert (server.JOB_COST, server.PATH_SUBMIT, server.PATH_STATUS) == (
        20,
        "/api/image-segmentation",
        "/api/task-status",
    )
    assert (
        server.EmulatorServer
        is importlib.import_module("airflow_provider_hitpaw.emulator.runner").EmulatorServer
    )
