"""JobStore transitions, ids, heartbeats, and the endpoints built on them (/v1/models, /readyz, /metrics)."""

from __future__ import annotations

import time

import pytest
import redis

from app.jobs import Job, JobStore, QueueFull, is_id, new_id
from app.settings import Settings
from api_harness import assert_error, complete_job, create


@pytest.fixture
def store(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield JobStore(client, Settings(redis_url=redis_url, max_queued=3, max_queued_per_tenant=2))
    client.close()


def make_job(tenant="acme", **overrides) -> Job:
    values = dict(id=new_id("video"), tenant=tenant, model="tiny", prompt="p", width=64, height=64, seconds=2, fps=8,
                  frames=17, seed=1, steps=4, guidance=4.0, created_at=int(time.time()))
    values.update(overrides)
    return Job(**values)


def test_ids_are_ulid_like_and_sortable():
    ids = [new_id("video") for _ in range(2000)]
    assert all(is_id(i, "video") and len(i) == 32 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert not is_id("video_short", "video") and not is_id("evt_" + "0" * 26, "video")


def test_record_round_trips_through_the_hash(store):
    job = make_job(negative_prompt=None, metadata={"a": "b"}, webhook_url="https://h/x",
                   webhook_events=["video.completed"], guidance=2.5)
    store.create(job)
    assert store.get(job.id) == job


def test_start_is_idempotent_and_refuses_final_jobs(store):
    job = make_job()
    store.create(job)
    assert store.queue_position(job.id) == 1
    assert store.start(job.id, "w1")
    assert store.queue_position(job.id) is None
    running = store.get(job.id)
    assert running.status == "in_progress" and running.started_at and running.attempts == 1
    assert store.start(job.id, "w2")  # redelivered after w1 died: starts over
    assert store.get(job.id).attempts == 2 and store.get(job.id).worker_id == "w2"
    assert store.complete(job.id, {"video": {"key": f"{job.id}/video.mp4"}})
    assert not store.start(job.id, "w3")  # completed: a late redelivery does nothing
    assert not store.complete(job.id, {})
    assert not store.fail(job.id, "x", "y")
    assert not store.start("video_" + "0" * 26, "w1")


def test_fail_and_cancel_transitions(store):
    failed, cancelled = make_job(), make_job()
    store.create(failed)
    store.create(cancelled)
    assert store.fail(failed.id, "deadline_exceeded", "took too long")
    assert store.get(failed.id).error == {"code": "deadline_exceeded", "message": "took too long"}
    assert store.request_cancel(cancelled.id) == "cancelled"
    assert store.request_cancel(cancelled.id) == "cancelled"
    assert store.request_cancel(failed.id) == "failed"
    assert store.request_cancel("video_" + "1" * 26) == "missing"
    assert store.queue_depth() == 0
    assert store.status_counts() == {"queued": 0, "failed": 1, "cancelled": 1}


def test_queue_limits_are_enforced_atomically(store):
    store.create(make_job("a"))
    store.create(make_job("a"))
    with pytest.raises(QueueFull) as tenant_full:
        store.create(make_job("a"))
    assert tenant_full.value.scope == "tenant"
    store.create(make_job("b"))
    with pytest.raises(QueueFull) as overall:
        store.create(make_job("c"))
    assert overall.value.scope == "overall"


def test_delete_removes_record_history_and_listing(store):
    job = make_job()
    store.create(job)
    assert store.delete(job.id) == "running"
    store.mark_cancelled(job.id)
    assert store.delete(job.id) == "deleted"
    assert store.get(job.id) is None and store.events(job.id) == []
    assert store.list("acme") == ([], False)
    assert store.delete(job.id) == "missing"


def test_heartbeats_feed_workers(store):
    store.heartbeat("w1", {"model": "tiny", "model_loaded": True})
    [worker] = store.workers()
    assert worker["worker_id"] == "w1" and worker["model"] == "tiny" and worker["seen_at"] <= time.time()
    store.redis.delete("reel:worker:w1")  # as when its TTL runs out
    assert store.workers() == []


def test_models_and_readiness_follow_worker_heartbeats(api, client):
    cards = client.get("/v1/models").json()
    assert cards["object"] == "list"
    [fallback] = cards["data"]
    assert fallback["id"] == "reel-shapes-v1" and fallback["workers"] == 0 and "64x64" in fallback["sizes"]
    assert assert_error(client.get("/readyz"), 503)["code"] == "no_worker"
    api.store.heartbeat("w1", {"model": "tiny", "model_loaded": False, "sizes": [[64, 64], [96, 96]],
                               "seconds": [0, 1, 2], "default_steps": 4, "default_guidance": 3.0})
    assert_error(client.get("/readyz"), 503)
    api.store.heartbeat("w1", {"model": "tiny", "model_loaded": True, "sizes": [[64, 64], [96, 96]],
                               "seconds": [0, 1, 2], "default_steps": 4, "default_guidance": 3.0})
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["tiny"]
    [card] = client.get("/v1/models").json()["data"]
    assert card == {"id": "tiny", "object": "model", "created": 0, "owned_by": "reel", "sizes": ["64x64", "96x96"],
                    "seconds": [0, 1, 2], "fps": 8, "default_steps": 4, "default_guidance": 3.0, "workers": 1}
    # The served model is accepted by name.
    assert create(client, model="tiny").json()["model"] == "tiny"
    assert client.get("/healthz").json() == {"status": "ok"}


def test_metrics_export_jobs_queue_latency_steps_and_webhooks(api, client):
    from app.metrics import observe_step_seconds

    done, waiting = create(client).json()["id"], create(client).json()["id"]
    complete_job(api, done)
    observe_step_seconds(api.store, 0.2)
    observe_step_seconds(api.store, 0.3)
    api.store.increment("webhook_deliveries", "delivered")
    text = client.get("/metrics").text
    assert 'reel_jobs{status="completed"} 1.0' in text
    assert 'reel_jobs{status="queued"} 1.0' in text
    assert "reel_queue_depth 1.0" in text
    assert "reel_job_latency_seconds_count 1.0" in text
    assert 'reel_sampler_step_seconds_bucket{le="0.25"} 1.0' in text
    assert 'reel_sampler_step_seconds_bucket{le="0.5"} 2.0' in text
    assert "reel_sampler_step_seconds_count 2.0" in text
    assert 'reel_webhook_deliveries_total{outcome="delivered"} 1.0' in text
    assert waiting


def test_limits_reported_by_the_model_workers_apply(api, client):
    api.store.heartbeat("w1", {"model": "reel-shapes-v1", "model_loaded": True, "max_side": 128, "seconds": [0, 1, 2, 4]})
    assert_error(create(client, size="256x256"), 400, "size")
    assert_error(create(client, seconds=8), 400, "seconds")
    assert create(client, size="128x128", seconds=4).status_code == 200
