"""Reuse judged from one listing of the output folder, on each store: only the folder's own files, every
page, odd names, and never an old snapshot."""

from __future__ import annotations

import json

import pytest

from airflow_provider_hitpaw import _kept, storage
from airflow_provider_hitpaw._results import ResultOutput
from tests.stores.stores import Store

SOURCE = "https://cdn.example.com/sku-123/main.jpg"
CUTOUT, MASK = storage.result_names(SOURCE)
RECORD = _kept.record_name(CUTOUT)


def record(cutout_bytes: int, mask_bytes: int) -> bytes:
    fields = _kept._input_fields(SOURCE)
    return json.dumps(
        {
            **fields,
            "fingerprint": None,
            "job_id": "old-job",
            "cutout": CUTOUT,
            "mask": MASK,
            "cutout_bytes": cutout_bytes,
            "mask_bytes": mask_bytes,
            "kept_at": "x",
        }
    ).encode()


@pytest.mark.parametrize("sibling", ["out2", "out_backup", "outputs"])
def test_listing_of_out_does_not_see_files_of_a_sibling_prefix(store: Store, sibling: str) -> None:
    """out/ has the record but its cut-out and mask were deleted (the user wants them made again);
    a sibling folder whose name starts with 'out' holds copies of the same names."""
    bucket = store.new_bucket()
    store.put(bucket, f"out/{RECORD}", record(3, 4))
    store.put(bucket, f"{sibling}/{CUTOUT}", b"abc")
    store.put(bucket, f"{sibling}/{MASK}", b"abcd")
    output = ResultOutput(path=store.path(bucket, "out"), conn_id=None, overwrite="skip")
    listing = output.list_kept([SOURCE])

    kept = output.find_kept(SOURCE, None, listing)
    assert kept is None, f"{store.name}: reused {kept} although out/ has no cut-out or mask"
    assert listing is None or CUTOUT not in listing


def test_listing_counts_only_files_of_the_folder_itself(store: Store) -> None:
    """A file of the wanted name one level deeper (out/sub/<cutout>) is no kept file of out/."""
    bucket = store.new_bucket()
    store.put(bucket, f"out/{RECORD}", record(3, 4))
    store.put(bucket, f"out/sub/{CUTOUT}", b"abc")
    store.put(bucket, f"out/sub/{MASK}", b"abcd")
    output = ResultOutput(path=store.path(bucket, "out"), conn_id=None, overwrite="skip")
    listing = output.list_kept([SOURCE])

    assert output.find_kept(SOURCE, None, listing) is None


def test_listing_over_1000_objects_still_finds_the_pair(store: Store) -> None:
    bucket = store.new_bucket()
    # More objects than one page of a listing holds, before the pair and after it.
    for i in range(1010):
        store.put(bucket, f"out/a{i:05d}.png", b"x")
    store.put(bucket, f"out/{CUTOUT}", b"abc")
    store.put(bucket, f"out/{MASK}", b"abcd")
    store.put(bucket, f"out/{RECORD}", record(3, 4))
    for i in range(50):
        store.put(bucket, f"out/z{i:05d}.png", b"x")
    output = ResultOutput(path=store.path(bucket, "out"), conn_id=None, overwrite="skip")
    listing = output.list_kept([SOURCE])
    assert listing is not None
    assert {CUTOUT, MASK, RECORD} <= set(listing), listing
    assert output.find_kept(SOURCE, None, listing) is not None


def test_list_folder_refresh_really_refreshes(store: Store) -> None:
    """list_folder asks fs.ls(..., refresh=True); adlfs names that flag invalidate_cache and ignores
    refresh, so a folder already in its dircache is answered from the old snapshot."""
    bucket = store.new_bucket()
    store.put(bucket, f"out/{CUTOUT}", b"abc")
    store.put(bucket, f"out/{MASK}", b"abcd")
    store.put(bucket, f"out/{RECORD}", record(3, 4))
    folder = store.path(bucket, "out")
    folder.fs.ls(folder.path, detail=True)  # anything earlier in this process that listed the folder
    # The cut-out is deleted by someone else (e.g. to have it made again).
    _delete(store, bucket, f"out/{CUTOUT}")
    output = ResultOutput(path=folder, conn_id=None, overwrite="skip")
    listing = output.list_kept([SOURCE])
    kept = output.find_kept(SOURCE, None, listing)
    assert kept is None, f"{store.name}: stale listing {listing} reused a pair whose cut-out is gone"


def _delete(store: Store, bucket: str, key: str) -> None:
    raw = store.raw
    if store.name == "azure":
        raw.client.get_blob_client(bucket, key).delete_blob()
    elif store.name == "s3":
        raw.client.delete_object(Bucket=bucket, Key=key)
    else:
        from urllib.parse import quote

        import requests

        requests.delete(
            f"{raw.endpoint}/storage/v1/b/{bucket}/o/{quote(key, safe='')}", timeout=10
        ).raise_for_status()


@pytest.mark.parametrize(
    "url", ["https://cdn.example.com/商品 图+%20/Café é+1%.jpg", "https://cdn.example.com/e\u0301t\u00e9.jpg"]
)
def test_unicode_and_odd_names_are_found_by_the_listing(store: Store, url: str) -> None:
    cut, mask = storage.result_names(url)
    rec = _kept.record_name(cut)
    bucket = store.new_bucket()
    fields = _kept._input_fields(url)
    store.put(bucket, f"out/{cut}", b"abc")
    store.put(bucket, f"out/{mask}", b"abcd")
    store.put(
        bucket,
        f"out/{rec}",
        json.dumps(
            {
                **fields,
                "fingerprint": None,
                "job_id": "j",
                "cutout": cut,
                "mask": mask,
                "cutout_bytes": 3,
                "mask_bytes": 4,
                "kept_at": "x",
            }
        ).encode(),
    )
    output = ResultOutput(path=store.path(bucket, "out dir+%"), conn_id=None, overwrite="skip")
    output = ResultOutput(path=store.path(bucket, "out"), conn_id=None, overwrite="skip")
    listing = output.list_kept([url])

    assert output.find_kept(url, None, listing) is not None
