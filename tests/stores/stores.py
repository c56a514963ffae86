"""The object stores the suite runs against, as the provider sees them (Airflow connections, paths) and as
a test sees them (a bucket of its own, objects put and read behind the provider's back, the requests that
write a given object).

Every store is a server on 127.0.0.1 started by ``conftest.py``: S3 is moto's server, Google Cloud Storage
is ``gcp-storage-emulator``, Azure Blob is Microsoft's Azurite. Airflow reaches each through a connection
defined in an ``AIRFLOW_CONN_*`` environment variable, as a deployment would.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath
    from fsspec import AbstractFileSystem

#: Azurite's development account and key, published by Microsoft for the emulator (not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#: moto's default region; any key pair is accepted while its IAM checks are off.
REGION = "us-east-1"
GCS_PROJECT = "hitpaw-test"


def conn_env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def aws_connection(endpoint: str, key: str = "testing", secret: str = "testing") -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": key,
            "password": secret,
            "extra": {"endpoint_url": endpoint, "region_name": REGION},
        }
    )


def gcs_connection(endpoint: str) -> str:
    """Anonymous credentials (the emulator checks none) and gcsfs pointed at the emulator through the
    Google provider's ``gcs.endpoint`` extra (its ``fs/gcs.py`` passes it to ``GCSFileSystem``)."""
    return json.dumps(
        {
            "conn_type": "google_cloud_platform",
            "extra": {"is_anonymous": True, "project": GCS_PROJECT, "gcs.endpoint": endpoint},
        }
    )


def azurite_connection_string(endpoint: str, *, sas: str | None = None) -> str:
    blob = f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    if sas is not None:
        return f"{blob}SharedAccessSignature={sas}"
    return f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};{blob}"


def wasb_connection(connection_string: str) -> str:
    return json.dumps({"conn_type": "wasb", "extra": {"connection_string": connection_string}})


@dataclass
class Store:
    """One object store as a test uses it."""

    #: ``s3``, ``gcs`` or ``azure``: test ids and messages.
    name: str
    #: The URI scheme its ``ObjectStoragePath`` takes.
    scheme: str
    #: The Airflow connection that may read and write everything.
    conn_id: str
    endpoint: str
    #: ``AIRFLOW_CONN_*`` variables this store defines (its connections, JSON).
    connections: dict[str, str] = field(default_factory=dict)
    #: A connection that may read but not write, and a bucket it can see; None where the emulator
    #: cannot express a missing write permission.
    readonly_conn_id: str | None = None
    readonly_bucket: str | None = None
    #: Whether the server refuses a conditional create of an existing object (measured).
    enforces_conditional_create: bool = True
    #: Puts, reads and removes objects behind the provider's back (a client of its own).
    raw: RawClient | None = None

    def uri(self, bucket: str, key: str = "") -> str:
        return f"{self.scheme}://{bucket}/{key}"

    def path(self, bucket: str, key: str = "", conn_id: str | None = None) -> ObjectStoragePath:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return ObjectStoragePath(self.uri(bucket, key), conn_id=conn_id or self.conn_id)

    @property
    def fs(self) -> AbstractFileSystem:
        """The filesystem Airflow gives the provider for this store's connection (cached by Airflow)."""
        return self.path("any").fs

    def new_bucket(self, prefix: str = "t") -> str:
        """A bucket (a container on Azure) of a test's own: the servers live for the whole session."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        assert self.raw is not None
        self.raw.make_bucket(name)
        return name

    def put(self, bucket: str, key: str, data: bytes) -> None:
        assert self.raw is not None
        self.raw.put(bucket, key, data)

    def get(self, bucket: str, key: str) -> bytes | None:
        assert self.raw is not None
        return self.raw.get(bucket, key)

    def keys(self, bucket: str, prefix: str = "", *, ledgers: bool = False) -> list[str]:
        """The objects under ``prefix``; without the tasks' ledgers and contact sheets (``.hitpaw-*/``)
        unless asked."""
        assert self.raw is not None
        found = self.raw.keys(bucket, prefix)
        return sorted(key for key in found if ledgers or "/.hitpaw-" not in f"/{key}")

    def on_write(
        self, bucket: str, key: str, action: Callable[[], None]
    ) -> contextlib.AbstractContextManager[Any]:
        """Run ``action`` once, right before the provider's first request that would make the object
        ``bucket/key`` appear or change (a put, a copy, a block list, whatever the filesystem sends).
        ``action`` may write behind the provider's back (a competing writer) or raise (a failed write)."""
        return _WRITE_HOOKS[self.name](self.fs, bucket, key, action)


class RawClient:
    """Direct access to a store, independent of Airflow and fsspec."""

    def make_bucket(self, name: str) -> None:
        raise NotImplementedError

    def put(self, bucket: str, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, bucket: str, key: str) -> bytes | None:
        raise NotImplementedError

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        raise NotImplementedError


class S3Raw(RawClient):
    def __init__(self, endpoint: str, key: str = "testing", secret: str = "testing") -> None:
        import boto3

        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    def make_bucket(self, name: str) -> None:
        self.client.create_bucket(Bucket=name)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def get(self, bucket: str, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        found = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return [str(item["Key"]) for item in found]


class GCSRaw(RawClient):
    """The emulator's JSON API over plain HTTP (no Google client library needed for this much)."""

    def __init__(self, endpoint: str) -> None:
        import requests

        self.endpoint = endpoint
        self.session = requests.Session()

    def make_bucket(self, name: str) -> None:
        answer = self.session.post(
            f"{self.endpoint}/storage/v1/b", params={"project": GCS_PROJECT}, json={"name": name}, timeout=10
        )
        answer.raise_for_status()

    def put(self, bucket: str, key: str, data: bytes) -> None:
        answer = self.session.post(
            f"{self.endpoint}/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": key},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        answer.raise_for_status()

    def get(self, bucket: str, key: str) -> bytes | None:
        from urllib.parse import quote

        answer = self.session.get(
            f"{self.endpoint}/storage/v1/b/{bucket}/o/{quote(key, safe='')}",
            params={"alt": "media"},
            timeout=10,
        )
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.content

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        answer = self.session.get(
            f"{self.endpoint}/storage/v1/b/{bucket}/o", params={"prefix": prefix}, timeout=10
        )
        answer.raise_for_status()
        return [str(item["name"]) for item in answer.json().get("items", [])]


class AzureRaw(RawClient):
    def __init__(self, connection_string: str) -> None:
        from azure.storage.blob import BlobServiceClient

        self.client = BlobServiceClient.from_connection_string(connection_string)

    def make_bucket(self, name: str) -> None:
        self.client.create_container(name)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client.get_blob_client(bucket, key).upload_blob(data, overwrite=True)

    def get(self, bucket: str, key: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return bytes(self.client.get_blob_client(bucket, key).download_blob().readall())
        except ResourceNotFoundError:
            return None

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        container = self.client.get_container_client(bucket)
        return [str(blob.name) for blob in container.list_blobs(name_starts_with=prefix or None)]


def azurite_readonly_sas() -> str:
    """An account SAS that may read and list every container, and nothing else."""
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    return generate_account_sas(
        AZURITE_ACCOUNT,
        AZURITE_KEY,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=6),
    )


def moto_iam_users(endpoint: str, bucket: str) -> dict[str, tuple[str, str]]:
    """Two IAM users on a moto server, before its IAM checks are turned on: ``admin`` may do anything on
    S3, ``reader`` may only get and list ``bucket``. Their key pairs, by name. Then the checks go on:
    from now on every request to that server must be signed by one of them."""
    import boto3
    import requests

    iam = boto3.client(
        "iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    policies = {
        "admin": {"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"},
        "reader": {
            "Effect": "Allow",
            "Action": ["s3:Get*", "s3:List*"],
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        },
    }
    keys = {}
    for user, statement in policies.items():
        iam.create_user(UserName=user)
        iam.put_user_policy(
            UserName=user,
            PolicyName=f"{user}-s3",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
        )
        created = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = (str(created["AccessKeyId"]), str(created["SecretAccessKey"]))
    S3Raw(endpoint, *keys["admin"]).make_bucket(bucket)
    # moto's server turns its IAM checks on after this many more requests: none.
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    return keys


# --- the requests that write one object ----------------------------------------------------------------

#: S3 operations that make an object appear or change.
_S3_WRITES = frozenset({"PutObject", "CopyObject", "CompleteMultipartUpload"})


@contextlib.contextmanager
def _s3_on_write(fs: Any, bucket: str, key: str, action: Callable[[], None]) -> Iterator[None]:
    """An aiobotocore event handler on the filesystem's own client, called with each call's parameters
    before its request is built."""
    fired: list[bool] = []

    def before_build(params: dict[str, Any], model: Any, **_: Any) -> None:
        if fired or model.name not in _S3_WRITES:
            return
        if params.get("Bucket") == bucket and params.get("Key") == key:
            fired.append(True)
            action()

    fs.connect()  # the client exists once connected; connecting sends nothing
    events = fs.s3.meta.events
    events.register("before-parameter-build.s3", before_build, unique_id="hitpaw-test-on-write")
    try:
        yield
    finally:
        events.unregister("before-parameter-build.s3", unique_id="hitpaw-test-on-write")


@contextlib.contextmanager
def _gcs_on_write(fs: Any, bucket: str, key: str, action: Callable[[], None]) -> Iterator[None]:
    """gcsfs sends every request through ``_call``: a wrapper on the instance sees them all."""
    fired: list[bool] = []
    real = fs._call
    named = json.dumps(key).encode()

    def writes_it(method: str, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if method.upper() not in ("POST", "PUT"):
            return False
        data = kwargs.get("data")
        if isinstance(data, bytes | bytearray | memoryview) and f"/b/{bucket}/o" in path:
            return named in bytes(data[:4096])  # a simple upload names its object in its metadata part
        if kwargs.get("json", {}).get("name") == key and f"/b/{bucket}/o" in path:
            return True  # a resumable upload's start
        # a copy or move: "b/{}/o/{}/rewriteTo/b/{}/o/{}" or "b/{}/o/{}/moveTo/o/{}", the target last
        return ("rewriteTo" in path or "moveTo" in path) and bool(args) and args[-1] == key

    async def call(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if not fired and writes_it(method, path, args, kwargs):
            fired.append(True)
            action()
        return await real(method, path, *args, **kwargs)

    fs._call = call
    try:
        yield
    finally:
        del fs._call


@contextlib.contextmanager
def _azure_on_write(fs: Any, bucket: str, key: str, action: Callable[[], None]) -> Iterator[None]:
    """Azure Storage's request hook policy runs a callback before each request of the service client's
    pipeline, whose policies every container and blob client adlfs makes shares."""
    from azure.storage.blob._shared.policies import StorageRequestHook

    fired: list[bool] = []
    (policy,) = (
        runner._policy
        for runner in fs.service_client._pipeline._impl_policies
        if isinstance(getattr(runner, "_policy", None), StorageRequestHook)
    )
    earlier = policy._request_callback

    def on_request(request: Any) -> None:
        http = request.http_request
        parts = urlsplit(http.url)
        query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
        commits = http.method == "PUT" and query.get("comp", "blocklist") == "blocklist"
        if not fired and commits and unquote(parts.path).endswith(f"/{bucket}/{key}"):
            fired.append(True)
            action()
        if earlier is not None:
            earlier(request)

    policy._request_callback = on_request
    try:
        yield
    finally:
        policy._request_callback = earlier


_WRITE_HOOKS: dict[str, Callable[..., contextlib.AbstractContextManager[Any]]] = {
    "s3": _s3_on_write,
    "gcs": _gcs_on_write,
    "azure": _azure_on_write,
}
