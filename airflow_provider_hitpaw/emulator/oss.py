"""HitPaw's OSS pre-signed upload: ``/api/oss/presign-put[/batch]``, the signed PUT, the uploaded objects.

As documented: success is ``"code": 0``, errors are plain HTTP statuses, ``expire_seconds`` is 60 to 7200
(default 3600), a batch takes 1 to 20 files, and the PUT must carry exactly the signed ``Content-Type``.

Choices where HitPaw's documentation is silent:

* Authentication failures of any kind (unknown, expired or no-access key) are HTTP 401.
* A ``content_type`` that does not match the extension is HTTP 400; ``expire_seconds`` must be an integer.
* In a batch, a file that fails validation does not fail the batch: it is counted in ``failed`` and its
  item is ``{"filename": ..., "error": ...}``.
* Error bodies are ``{"code": <HTTP status>, "message": ..., "data": {}}``.
* Upload URLs are signed with HMAC-SHA256 over method, content type, expiry and object key, with a secret
  made at start-up; a PUT may overwrite the object until its URL expires. Objects are kept 7 days and
  served without a key at ``/oss/objects/<object_key>`` (the ``access_url``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from airflow_provider_hitpaw.emulator.api import read_json_object
from airflow_provider_hitpaw.emulator.state import Presign, StoredObject

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.state import EmulatorState

PATH_PRESIGN: Final = "/api/oss/presign-put"
PATH_PRESIGN_BATCH: Final = "/api/oss/presign-put/batch"
#: What the OSS upload accepts, and the content type each extension must be uploaded with.
UPLOAD_CONTENT_TYPES: Final[Mapping[str, str]] = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
}
OSS_EXPIRE_DEFAULT: Final = 3600
OSS_EXPIRE_MIN: Final = 60
OSS_EXPIRE_MAX: Final = 7200
OSS_BATCH_MAX: Final = 20
_EXPIRE_MESSAGE: Final = f"expire_seconds must be an integer from {OSS_EXPIRE_MIN} to {OSS_EXPIRE_MAX}"


def oss_error(status: int, message: str) -> web.Response:
    """The upload API's errors: a plain HTTP status, echoed in the body."""
    return web.json_response({"code": status, "message": message, "data": {}}, status=status)


class OssApi:
    """The handlers of the pre-signed upload; ``base_url`` gives the base of the URLs handed out."""

    def __init__(self, state: EmulatorState, base_url: Callable[[], str]) -> None:
        self._state = state
        self._base_url = base_url
        self._secret = secrets.token_bytes(32)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the handlers."""
        router.add_post(PATH_PRESIGN, self.presign)
        router.add_post(PATH_PRESIGN_BATCH, self.presign_batch)
        router.add_put("/oss/upload/{key:.+}", self.upload)
        router.add_get("/oss/objects/{key:.+}", self.stored_object)

    def _key_error(self, request: web.Request) -> web.Response | None:
        if self._state.key_state(request.headers.get("Apikey", "")) != "valid":
            return oss_error(401, "Unauthorized")
        return None

    def _signature(self, object_key: str, content_type: str, expire_at: int) -> str:
        message = f"PUT\n{content_type}\n{expire_at}\n{object_key}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    @staticmethod
    def _expire_seconds(body: Mapping[str, Any]) -> int | None:
        value = body.get("expire_seconds", OSS_EXPIRE_DEFAULT)
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if OSS_EXPIRE_MIN <= value <= OSS_EXPIRE_MAX else None

    def _presign_one(self, spec: Any, expire_seconds: int) -> dict[str, Any] | str:
        """A pre-signed upload for one file, or the reason it was refused."""
        if not isinstance(spec, Mapping):
            return "file entry must be an object"
        filename = spec.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            return "missing filename"
        ext = filename.rsplit(".", 1)[1].lower() if "." in filename else ""
        content_type = UPLOAD_CONTENT_TYPES.get(ext)
        if content_type is None:
            return f"extension not allowed: {ext or '(none)'}"
        asked = spec.get("content_type")
        if asked is not None and (not isinstance(asked, str) or asked.strip().lower() != content_type):
            return f"content_type does not match the extension (expected {content_type})"
        now = self._state.now()
        day = datetime.fromtimestamp(now, UTC).strftime("%Y/%m/%d")
        object_key = f"uploads/{day}/{secrets.token_hex(8)}.{ext}"
        expire_at = int(now + expire_seconds)
        self._state.presigns[object_key] = Presign(content_type, expire_at)
        signature = self._signature(object_key, content_type, expire_at)
        base = self._base_url()
        return {
            "upload_url": f"{base}/oss/upload/{object_key}?Expires={expire_at}&Signature={signature}",
            "access_url": f"{base}/oss/objects/{object_key}",
            "object_key": object_key,
            "content_type": content_type,
            "expire_at": expire_at,
        }

    async def presign(self, request: web.Request) -> web.Response:
        """``POST /api/oss/presign-put``."""
        self._state.sweep()
        if (error := self._key_error(request)) is not None:
            return error
        body = await read_json_object(request)
        if body is None:
            return oss_error(400, "body must be a JSON object")
        expire_seconds = self._expire_seconds(body)
        if expire_seconds is None:
            return oss_error(400, _EXPIRE_MESSAGE)
        item = self._presign_one(body, expire_seconds)
        if isinstance(item, str):
            return oss_error(400, item)
        return web.json_response({"code": 0, "data": item})

    async def presign_batch(self, request: web.Request) -> web.Response:
        """``POST /api/oss/presign-put/batch``."""
        self._state.sweep()
        if (error := self._key_error(request)) is not None:
            return error
        body = await read_json_object(request)
        if body is None:
            return oss_error(400, "body must be a JSON object")
        files = body.get("files")
        if not isinstance(files, list) or not 1 <= len(files) <= OSS_BATCH_MAX:
            return oss_error(400, f"files must be a list of 1 to {OSS_BATCH_MAX} entries")
        expire_seconds = self._expire_seconds(body)
        if expire_seconds is None:
            return oss_error(400, _EXPIRE_MESSAGE)
        items: list[dict[str, Any]] = []
        failed = 0
        for spec in files:
            item = self._presign_one(spec, expire_seconds)
            name = spec.get("filename") if isinstance(spec, Mapping) else None
            if isinstance(item, str):
                failed += 1
                items.append({"filename": name, "error": item})
            else:
                items.append({"filename": name, **item})
        data = {"total": len(files), "success": len(files) - failed, "failed": failed, "items": items}
        return web.json_response({"code": 0, "data": data})

    async def upload(self, request: web.Request) -> web.Response:
        """``PUT /oss/upload/<object_key>?Expires=...&Signature=...`` with the signed Content-Type."""
        object_key = request.match_info["key"]
        presign = self._state.presigns.get(object_key)
        try:
            expires = int(request.query.get("Expires", ""))
        except ValueError:
            return oss_error(403, "missing or malformed Expires")
        signature = request.query.get("Signature", "")
        if presign is None or expires != presign.expire_at:
            return oss_error(403, "no such pre-signed upload")
        expected = self._signature(object_key, presign.content_type, presign.expire_at)
        if not hmac.compare_digest(signature, expected):
            return oss_error(403, "signature does not match")
        if self._state.now() > presign.expire_at:
            return oss_error(403, "the upload URL has expired")
        content_type = request.headers.get("Content-Type", "")
        if content_type.strip().lower() != presign.content_type:
            return oss_error(403, f"Content-Type must be {presign.content_type}, as signed")
        data = await request.read()
        self._state.objects[object_key] = StoredObject(presign.content_type, data, self._state.now())
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest().upper()}"'})  # noqa: S324

    async def stored_object(self, request: web.Request) -> web.Response:
        """``GET /oss/objects/<object_key>``: an uploaded file, public like HitPaw's CDN."""
        self._state.sweep()
        obj = self._state.objects.get(request.match_info["key"])
        if obj is None:
            raise web.HTTPNotFound()
        return web.Response(body=obj.data, content_type=obj.content_type)
