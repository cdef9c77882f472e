"""Image storage: the directory store, and the S3 path against a real S3 API server (moto)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from sync_pipeline.core.sync_runner import RunContext
from sync_pipeline.defs.promidata.storage import (
    DirectoryStore,
    ImageRejectedError,
    PromidataImageStorage,
    sniff_image,
)
from sync_pipeline.defs.promidata.sync import sync_supplier_direct
from sync_pipeline.sandbox.promidata.images import jpeg, png
from sync_pipeline_tests.defs.promidata.conftest import Promidata

BUCKET = "catalog-images"
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


@pytest.fixture
def s3_server() -> Iterator[str]:
    """moto's S3 API server on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", **CREDENTIALS).create_bucket(
        Bucket=BUCKET
    )
    yield url
    server.stop()


def s3_objects(url: str) -> dict[str, Any]:
    """Key → object summary of the bucket."""
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", **CREDENTIALS)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def test_sync_stores_images_in_s3_once(promidata: Promidata, s3_server: str) -> None:
    storage = PromidataImageStorage(
        bucket=BUCKET,
        s3_endpoint_url=s3_server,
        s3_region_name="us-east-1",
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )
    ctx = RunContext(owner="s3-test")
    result = sync_supplier_direct(promidata.api, storage, promidata.db_url, "A23", ctx)
    assert result["errors"] == 0
    objects = s3_objects(s3_server)
    expected = promidata.expected("A23")["images"]
    assert sorted(k.rsplit("/", 1)[-1] for k in objects) == sorted(expected)
    client = storage.s3_client()
    key = next(iter(objects))
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == key.rsplit("/", 1)[-1]
    # a second supplier sharing nothing, and a re-put of an existing key, write nothing new
    store = storage.store()
    assert store.exists(key) and not store.put(key, b"\xff\xd8\xff other", "image/jpeg")
    assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body


def test_directory_store_writes_once_and_refuses_escaping_keys(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    assert store.put("a/b", b"one", "image/jpeg")
    assert not store.put("a/b", b"two", "image/jpeg")
    assert (tmp_path / "a" / "b").read_bytes() == b"one"
    with pytest.raises(ValueError, match="escapes"):
        store.exists("../outside")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (jpeg([10, 200], "x"), "image/jpeg"),
        (png((1, 2, 3), "x"), "image/png"),
        (b"GIF89a....", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
    ],
)
def test_sniff_recognises_images(data: bytes, expected: str) -> None:
    assert sniff_image(data) == expected


@pytest.mark.parametrize("data", [b"<!DOCTYPE html><html>", b"", b"\x00\x01\x02"])
def test_sniff_rejects_other_bytes(data: bytes) -> None:
    with pytest.raises(ImageRejectedError, match="not an image"):
        sniff_image(data)


def test_too_large_images_are_rejected() -> None:
    storage = PromidataImageStorage(max_image_bytes=100)
    with pytest.raises(ImageRejectedError, match="larger than max_image_bytes=100"):
        storage.check(jpeg([1], "x", padding=200))
