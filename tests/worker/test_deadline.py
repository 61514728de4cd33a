"""The per-job deadline: a generation that runs too long is stopped by the worker and failed."""

from __future__ import annotations

import time

import redis

from app.jobs import Job, JobStore, new_id
from app.queue import make_celery, send_generate
from app.settings import Settings


def wait_until(condition, timeout: float = 240.0, interval: float = 0.1, what: str = "condition"):
    """Poll until `condition()` is truthy and return it; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
    return value


def test_a_job_past_its_deadline_fails_and_the_worker_goes_on(module_redis_url, start_worker, tmp_path):
    settings = Settings(redis_url=module_redis_url, data_dir=tmp_path)
    store = JobStore(redis.Redis.from_url(module_redis_url), settings)
    celery = make_celery(settings)
    worker = start_worker(module_redis_url, tmp_path, model="tiny", job_deadline_seconds=2)
    worker.wait_ready(store)

    def submit(steps: int) -> str:
        job = Job(id=new_id("video"), tenant="acme", model="tiny", prompt="a slow red circle", width=64, height=64,
                  seconds=1, fps=8, frames=9, seed=1, steps=steps, guidance=4.0, created_at=int(time.time()))
        store.create(job)
        send_generate(celery, job.id)
        return job.id

    slow = submit(1000)
    done = wait_until(lambda: (job := store.get(slow)).is_final and job, what="the slow job to end")
    assert done.status == "failed"
    assert done.error["code"] == "deadline_exceeded" and "2 s" in done.error["message"]
    assert done.started_at is not None and done.progress < 100
    assert not (settings.assets_dir / slow).exists()
    assert worker.process.poll() is None
    store.redis.close()
