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


class ThreadedAPI:
    """The real API (create_app under uvicorn) in a thread, on a free port."""

    def __init__(self, settings):
        import threading

        import uvicorn

        from app.main import create_app

        self.settings = settings
        self.url = f"http://127.0.0.1:{free_port()}"
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]), log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadedAPI":
        import time

        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def s3_api(redis_url, s3_endpoint, s3_bucket, s3_credentials, tmp_path):
    """Start the API on S3 storage with settings overrides: `s3_api(content_redirect=False)`."""
    from app.settings import Settings

    started = []

    def start(**overrides) -> ThreadedAPI:
        values = {
            "redis_url": redis_url, "data_dir": tmp_path / "data", "storage": "s3", "s3_bucket": s3_bucket,
            "s3_endpoint_url": s3_endpoint, "s3_region": "us-east-1", "api_key": "sk-reel-s3-test-key-0123456789",
        }
        values.update(overrides)
        api = ThreadedAPI(Settings(**values)).__enter__()
        started.append(api)
        return api

    yield start
    for api in started:
        api.__exit__(None, None, None)
