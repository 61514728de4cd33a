"""Time limits a worker enforces on its own: the per-job deadline, and the periodic sweep of
expired assets (a timer in the worker, no beat process and no task sent by anyone)."""

from __future__ import annotations

import time

import pytest
import redis

from app.jobs import Job, JobStore, new_id
from app.queue import make_celery, send_generate
from app.settings import Settings
from app.storage import LocalStorage

from waiting import wait_until

DEADLINE_SECONDS = 2


@pytest.fixture(scope="module")
def service(module_redis_url, start_worker, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    settings = Settings(redis_url=module_redis_url, data_dir=data_dir)
    store = JobStore(redis.Redis.from_url(module_redis_url), settings)
    worker = start_worker(module_redis_url, data_dir, model="tiny", job_deadline_seconds=DEADLINE_SECONDS,
                          sweep_interval_seconds=1)
    worker.wait_ready(store)
    yield settings, store, make_celery(settings), worker
    store.redis.close()


def new_job(steps: int, created_at: int | None = None, side: int = 64, seconds: int = 1) -> Job:
    return Job(id=new_id("video"), tenant="acme", model="tiny", prompt="a slow red circle", width=side, height=side,
               seconds=seconds, fps=8, frames=1 + 8 * seconds, seed=1, steps=steps, guidance=4.0,
               created_at=created_at or int(time.time()))


def test_a_job_past_its_deadline_fails_and_the_worker_goes_on(service):
    settings, store, celery, worker = service
    # The largest clip the tiny model makes, at far more steps than fit in the deadline on any CPU.
    slow = new_job(steps=1000, side=128, seconds=4)
    store.create(slow)
    send_generate(celery, slow.id)
    done = wait_until(lambda: (job := store.get(slow.id)).is_final and job, what="the slow job to end")
    assert done.status == "failed"
    assert done.error["code"] == "deadline_exceeded" and f"{DEADLINE_SECONDS} s" in done.error["message"]
    assert done.started_at is not None and done.progress < 100
    assert not (settings.assets_dir / slow.id).exists()

    quick = new_job(steps=1)
    store.create(quick)
    send_generate(celery, quick.id)
    assert wait_until(lambda: (job := store.get(quick.id)).is_final and job).status == "completed"
    assert worker.process.poll() is None


def test_expired_assets_are_swept_on_a_timer(service):
    settings, store, celery, worker = service
    storage = LocalStorage(settings.assets_dir)
    old = new_job(steps=1, created_at=int(time.time()) - 3 * settings.asset_ttl_seconds)
    store.create(old)
    store.start(old.id, "some-worker")
    stored = {"video": storage.put(f"{old.id}/video.mp4", b"old bytes", "video/mp4").as_asset()}
    assert storage.exists(f"{old.id}/video.mp4")
    # Completed long ago: from here on the sweeper may take it at any moment.
    assert store.complete(old.id, stored, now=time.time() - 2 * settings.asset_ttl_seconds)

    # The sweep deletes the files, then forgets them in the record.
    wait_until(lambda: store.get(old.id).assets == {}, what="the sweeper")
    assert not storage.exists(f"{old.id}/video.mp4")
    assert store.expired_jobs() == []
