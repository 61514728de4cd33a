"""Real services for the deployment tests: an S3 protocol server on a free port.

moto's server speaks S3 over real HTTP (boto3 signs, sends and parses exactly as
it would against AWS or MinIO); it does not verify signatures, which is why the
tests check the presigned URLs' query parameters themselves.
"""

from __future__ import annotations

import socket
import uuid

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Credentials for the S3 server: moto accepts any, but boto3 refuses to sign without some.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "reel-test",
    "AWS_SECRET_ACCESS_KEY": "reel-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def closed_port() -> int:
    """A port on which nothing listens (for tests of an unreachable service)."""
    return free_port()


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_credentials(monkeypatch):
    """The usual AWS_* variables, as a deployment sets them; no shared config files."""
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return dict(S3_CREDENTIALS)


@pytest.fixture
def s3_bucket(s3_endpoint, s3_credentials):
    """A fresh, empty bucket on the session's S3 server."""
    import boto3

    name = f"reel-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name
