"""Commerce tests run over the local and the S3 object store (GCS is covered by the store's own tests)."""

import uuid
from pathlib import Path

import pytest

from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform_tests.fixtures.object_store import S3Server


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStoreResource:
    if request.param == "file":
        return ObjectStoreResource(url=(tmp_path / "objects").as_uri())
    s3: S3Server = request.getfixturevalue("s3_server")
    return ObjectStoreResource(url=f"s3://{s3.bucket}/c-{uuid.uuid4().hex[:12]}", aws_endpoint_url=s3.endpoint_url)
