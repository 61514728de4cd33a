"""Helpers for the API tests: a uvicorn server in a thread, job completion through JobStore, error checks.

A module of its own (not conftest.py) so that test modules can import it by a name no
other test directory uses."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import redis
import uvicorn

from app.auth import create_key
from app.jobs import JobStore
from app.main import create_app
from app.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningAPI:
    """A uvicorn server in a thread, with a JobStore on the same Redis for setting up jobs."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.store = JobStore(self.redis, settings)

    def start(self) -> "RunningAPI":
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.redis.close()

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def new_key(self, tenant: str) -> str:
        return create_key(self.store, tenant)[0]


def complete_job(api: RunningAPI, job_id: str, payloads: dict[str, bytes] | None = None, now: float | None = None) -> dict:
    """Run a job through the worker's transitions with real bytes in LocalStorage; returns the payloads."""
    from app.storage import LocalStorage

    payloads = payloads or {
        "video": b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40,
        "thumbnail": b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"t" * 300,
        "spritesheet": b"\xff\xd8\xff\xe0" + b"s" * 500,
    }
    content_types = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}
    names = {"video": "video.mp4", "thumbnail": "thumbnail.webp", "spritesheet": "spritesheet.jpg"}
    storage = LocalStorage(api.settings.assets_dir)
    assert api.store.start(job_id, "test-worker")
    api.store.set_progress(job_id, 50)
    assets = {variant: storage.put(f"{job_id}/{names[variant]}", data, content_types[variant]).as_asset()
              for variant, data in payloads.items()}
    assert api.store.complete(job_id, assets, now=now)
    return payloads


def create(client, **fields):
    return client.post("/v1/videos", json={"prompt": "a red circle moving left", **fields})


def assert_error(response, status, param=None):
    """The response is an error in OpenAI's shape with this status (and `param`); returns the error."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error
