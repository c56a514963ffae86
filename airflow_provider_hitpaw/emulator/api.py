"""HitPaw's segmentation API as the emulator answers it: submission, task status and the result files.

Everything HitPaw documents (``hitpaw-api.md``) is reproduced as written: the endpoints, the ``Apikey``
header, the JSON envelope, every error ``code`` with its HTTP status and message, the flat 20 coins per
job, ``CONVERTING`` -> ``COMPLETED``/``ERROR``.

Choices where HitPaw's documentation is silent:

* The key is checked first, then the body: a bad key with a bad body is ``110400000``. A body that is not
  a JSON object, or lacks a field / has it with a non-string type, is ``100400002``. ``Content-Type`` is
  not enforced.
* A ``file_url`` that is not ``http``/``https``, has no host, contains whitespace or is over 2048
  characters is ``100400001`` at submission (see :mod:`.fetch` for what happens to the others).
* ``task-status`` for an unknown or expired ``job_id`` answers ``100400002`` / HTTP 400 "Bad Request".
* Result files are public (no ``Apikey``), like HitPaw's CDN links; they 404 before ``COMPLETED``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from airflow_provider_hitpaw.emulator.fetch import FetchError
from airflow_provider_hitpaw.emulator.imaging import ImageError, segment_bytes
from airflow_provider_hitpaw.emulator.state import JOB_COST

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from airflow_provider_hitpaw.emulator.fetch import ImageFetcher
    from airflow_provider_hitpaw.emulator.state import EmulatorState, Job

log = logging.getLogger("airflow_provider_hitpaw.emulator")

# HitPaw's error codes (hitpaw-api.md section 3), with their HTTP status and message.
NO_ACCESS: Final = 100400000
INVALID_URL: Final = 100400001
BAD_REQUEST: Final = 100400002
TOKEN_EXPIRED: Final = 100401000
RATE_LIMITED: Final = 100429000
INTERNAL_ERROR: Final = 100500000
INVALID_API_KEY: Final = 110400000
COINS_NOT_ENOUGH: Final = 110402000
ERRORS: Final[Mapping[int, tuple[int, str]]] = {
    NO_ACCESS: (400, "No access"),
    INVALID_URL: (400, "Invalid URL"),
    BAD_REQUEST: (400, "Bad Request"),
    TOKEN_EXPIRED: (401, "Token is expired"),
    RATE_LIMITED: (429, "Too Many Requests"),
    INTERNAL_ERROR: (500, "Internal error"),
    INVALID_API_KEY: (400, "api_key is not valid"),
    COINS_NOT_ENOUGH: (402, "The coins are not enough"),
}

PATH_SUBMIT: Final = "/api/image-segmentation"
PATH_STATUS: Final = "/api/task-status"
RESULT_FILES: Final = ("cutout.png", "mask.png")
MAX_URL_LENGTH: Final = 2048


def hitpaw_error(code: int, message: str | None = None) -> web.Response:
    """HitPaw's error envelope with the HTTP status its table gives for ``code``."""
    status, default_message = ERRORS[code]
    return web.json_response({"code": code, "message": message or default_message, "data": {}}, status=status)


def hitpaw_ok(data: Mapping[str, Any]) -> web.Response:
    """HitPaw's success envelope (code 200)."""
    return web.json_response({"code": 200, "message": "OK", "data": dict(data)})


def validate_file_url(url: str) -> bool:
    """Whether ``url`` is a well-formed http(s) URL HitPaw would accept for fetching."""
    if not url or len(url) > MAX_URL_LENGTH or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


async def read_json_object(request: web.Request) -> dict[str, Any] | None:
    """The request body if it is a JSON object, else None (whatever the ``Content-Type``)."""
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


class HitPawApi:
    """The handlers of ``/api/image-segmentation``, ``/api/task-status`` and ``/results/...``.

    ``base_url`` gives the base of the URLs handed out (it is only known once the emulator listens);
    ``spawn`` runs a job's processing in the background.
    """

    def __init__(
        self,
        state: EmulatorState,
        fetcher: ImageFetcher,
        base_url: Callable[[], str],
        spawn: Callable[[Awaitable[None]], None],
    ) -> None:
        self._state = state
        self._fetcher = fetcher
        self._base_url = base_url
        self._spawn = spawn

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the handlers."""
        router.add_post(PATH_SUBMIT, self.submit)
        router.add_post(PATH_STATUS, self.task_status)
        router.add_get("/results/{job_id}/{name}", self.result_file)

    def _key_error(self, request: web.Request) -> web.Response | None:
        state = self._state.key_state(request.headers.get("Apikey", ""))
        if state is None:
            return hitpaw_error(INVALID_API_KEY)
        if state == "expired":
            return hitpaw_error(TOKEN_EXPIRED)
        if state == "no_access":
            return hitpaw_error(NO_ACCESS)
        return None

    async def submit(self, request: web.Request) -> web.Response:
        """``POST /api/image-segmentation``: charge, create the job, start fetching its image."""
        self._state.sweep()
        if (error := self._key_error(request)) is not None:
            return error
        body = await read_json_object(request)
        if body is None or not isinstance(body.get("file_url"), str):
            return hitpaw_error(BAD_REQUEST)
        file_url: str = body["file_url"]
        if not validate_file_url(file_url):
            return hitpaw_error(INVALID_URL)
        job = self._state.create_job(file_url)
        if job is None:
            return hitpaw_error(COINS_NOT_ENOUGH)
        self._spawn(self.process(job))
        return hitpaw_ok({"job_id": job.job_id, "consume_coins": JOB_COST})

    async def task_status(self, request: web.Request) -> web.Response:
        """``POST /api/task-status``."""
        self._state.sweep()
        if (error := self._key_error(request)) is not None:
            return error
        body = await read_json_object(request)
        if body is None or not isinstance(body.get("job_id"), str):
            return hitpaw_error(BAD_REQUEST)
        job = self._state.jobs.get(body["job_id"])
        if job is None:
            return hitpaw_error(BAD_REQUEST)
        status = job.status(self._state.now())
        done = status == "COMPLETED"
        base = self._base_url()
        return hitpaw_ok(
            {
                "job_id": job.job_id,
                "status": status,
                "res_url": f"{base}/results/{job.job_id}/cutout.png" if done else "",
                "mask_url": f"{base}/results/{job.job_id}/mask.png" if done else "",
                "original_url": job.file_url,
            }
        )

    async def result_file(self, request: web.Request) -> web.Response:
        """``GET /results/{job_id}/cutout.png|mask.png``, once the job is COMPLETED."""
        self._state.sweep()
        job = self._state.jobs.get(request.match_info["job_id"])
        name = request.match_info["name"]
        if job is None or name not in RESULT_FILES or job.status(self._state.now()) != "COMPLETED":
            raise web.HTTPNotFound()
        assert job.result is not None
        data = job.result.cutout_png if name == "cutout.png" else job.result.mask_png
        return web.Response(body=data, content_type="image/png")

    async def process(self, job: Job) -> None:
        """Fetch and segment one job's image; any failure becomes the job's ERROR."""
        try:
            data = await self._fetcher.fetch(job.file_url)
            job.result = await asyncio.to_thread(segment_bytes, data)
        except (FetchError, ImageError) as exc:
            job.error = str(exc)
        except Exception as exc:  # a bug here must fail the job, not hang it in CONVERTING
            log.exception("processing job %s failed", job.job_id)
            job.error = f"internal error: {exc}"
        job.processed_at = self._state.now()
        log.info("job %s processed: %s", job.job_id, "ok" if job.error is None else job.error)
