"""The API sends `worker.tasks.generate_video` by name to the `generate` queue."""

from __future__ import annotations

import base64
import json
import threading

from celery.contrib.testing.worker import start_worker

from app.queue import GENERATE_TASK, make_celery
from api_harness import create


def test_create_puts_the_task_in_the_generate_list(api, client):
    video_id = create(client).json()["id"]
    messages = [json.loads(raw) for raw in api.redis.lrange("generate", 0, -1)]
    assert len(messages) == 1
    message = messages[0]
    assert message["headers"]["task"] == GENERATE_TASK
    assert message["properties"]["delivery_info"]["routing_key"] == "generate"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [video_id] and kwargs == {}


def test_a_real_celery_worker_receives_the_job_id(api, client):
    received: list[str] = []
    arrived = threading.Event()
    consumer = make_celery(api.settings)

    @consumer.task(name=GENERATE_TASK)
    def generate_video(job_id: str) -> None:
        received.append(job_id)
        arrived.set()

    video_id = create(client).json()["id"]
    with start_worker(consumer, pool="solo", perform_ping_check=False, queues=["generate"], loglevel="WARNING"):
        assert arrived.wait(timeout=60)
    assert received == [video_id]


def test_unreachable_broker_is_503_and_leaves_no_job(api, client):
    from api_harness import assert_error, free_port

    working = api.app.state.celery
    # The store answers; only the broker the API sends tasks to is down.
    api.app.state.celery = make_celery(api.settings.model_copy(update={
        "redis_url": f"redis://127.0.0.1:{free_port()}/0", "broker_send_timeout": 0.5}))
    try:
        response = client.post("/v1/videos", json={"prompt": "p"}, headers={"Idempotency-Key": "k"})
        assert assert_error(response, 503)["code"] == "queue_unavailable"
        assert api.store.list("acme") == ([], False) and api.store.queue_depth() == 0
    finally:
        api.app.state.celery = working
    # The client's retry with the same key makes the job now.
    retried = client.post("/v1/videos", json={"prompt": "p"}, headers={"Idempotency-Key": "k"})
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert api.redis.llen("generate") == 1
