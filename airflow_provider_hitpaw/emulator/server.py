"""The emulator's public names in one place, where they have always been importable from.

``from airflow_provider_hitpaw.emulator.server import Emulator, EmulatorServer, EmulatorConfig, ...`` keeps
working: each name is defined in the module of its concern (see the package docstring) and re-exported here.
The paths and error codes among them are the emulator's own copies, deliberately not imported from the
provider's ``_api.py``, so that they check it independently.
"""

from __future__ import annotations

from airflow_provider_hitpaw.emulator.api import (
    BAD_REQUEST,
    COINS_NOT_ENOUGH,
    ERRORS,
    INTERNAL_ERROR,
    INVALID_API_KEY,
    INVALID_URL,
    MAX_URL_LENGTH,
    NO_ACCESS,
    PATH_STATUS,
    PATH_SUBMIT,
    RATE_LIMITED,
    RESULT_FILES,
    TOKEN_EXPIRED,
    hitpaw_error,
    hitpaw_ok,
    validate_file_url,
)
from airflow_provider_hitpaw.emulator.app import Emulator, EmulatorConfig
from airflow_provider_hitpaw.emulator.fetch import MAX_FETCH_BYTES, MAX_REDIRECTS, FetchError
from airflow_provider_hitpaw.emulator.oss import (
    OSS_BATCH_MAX,
    OSS_EXPIRE_DEFAULT,
    OSS_EXPIRE_MAX,
    OSS_EXPIRE_MIN,
    PATH_PRESIGN,
    PATH_PRESIGN_BATCH,
    UPLOAD_CONTENT_TYPES,
    oss_error,
)
from airflow_provider_hitpaw.emulator.runner import EmulatorServer, FaultLike
from airflow_provider_hitpaw.emulator.state import (
    DEFAULT_RESULT_TTL,
    JOB_COST,
    KEY_STATES,
    UPLOAD_TTL,
    EmulatorState,
    Job,
    Presign,
    StoredObject,
)

__all__ = [
    "BAD_REQUEST",
    "COINS_NOT_ENOUGH",
    "DEFAULT_RESULT_TTL",
    "ERRORS",
    "INTERNAL_ERROR",
    "INVALID_API_KEY",
    "INVALID_URL",
    "JOB_COST",
    "KEY_STATES",
    "MAX_FETCH_BYTES",
    "MAX_REDIRECTS",
    "MAX_URL_LENGTH",
    "NO_ACCESS",
    "OSS_BATCH_MAX",
    "OSS_EXPIRE_DEFAULT",
    "OSS_EXPIRE_MAX",
    "OSS_EXPIRE_MIN",
    "PATH_PRESIGN",
    "PATH_PRESIGN_BATCH",
    "PATH_STATUS",
    "PATH_SUBMIT",
    "RATE_LIMITED",
    "RESULT_FILES",
    "TOKEN_EXPIRED",
    "UPLOAD_CONTENT_TYPES",
    "UPLOAD_TTL",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "FaultLike",
    "FetchError",
    "Job",
    "Presign",
    "StoredObject",
    "hitpaw_error",
    "hitpaw_ok",
    "oss_error",
    "validate_file_url",
]
