"""OpenLineage naming: credentials and signed queries in an input URL never reach the lineage backend."""

from __future__ import annotations

import pytest

from airflow_provider_hitpaw._lineage import lineage, namespace_and_name


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("https://alice:s3cr3t@cdn.example.com/a/shoe.jpg", ("https://cdn.example.com", "/a/shoe.jpg")),
        ("https://cdn.example.com:8443/a.jpg?X-Signature=SECRET", ("https://cdn.example.com:8443", "/a.jpg")),
        ("http://[::1]:8090/samples/shoe.jpg", ("http://[::1]:8090", "/samples/shoe.jpg")),
        ("/data/out/a.png", ("file", "/data/out/a.png")),
        ("s3://bucket/key/a.png", ("s3://bucket", "/key/a.png")),
    ],
)
def test_namespace_and_name(location: str, expected: tuple[str, str]) -> None:
    assert namespace_and_name(location) == expected


def test_the_facets_carry_no_credentials() -> None:
    pytest.importorskip("airflow.providers.openlineage")
    facets = lineage(
        {"input": "https://alice:s3cr3t@cdn.example.com/a.jpg?sig=SECRET", "outputs": ["/data/out/a.png"]}
    )
    text = repr(facets)
    assert "s3cr3t" not in text
    assert "alice" not in text
    assert "SECRET" not in text
