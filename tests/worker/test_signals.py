"""Celery's worker signals reach every worker in a process; the service's handlers act only for its own app."""

import threading

from celery import Celery
from celery.contrib.testing.worker import start_worker

import worker.celery_app as service_worker


def test_a_worker_of_another_app_leaves_the_model_unloaded(redis_url):
    other = Celery("other", broker=redis_url)
    ran = threading.Event()

    @other.task(name="ping")
    def ping() -> None:
        ran.set()

    # The solo pool sends worker_process_init and worker_ready in this process, as the service's worker does.
    with start_worker(other, pool="solo", perform_ping_check=False, queues=["generate"], loglevel="WARNING"):
        ping.apply_async(queue="generate")
        assert ran.wait(timeout=60)
    assert service_worker._runtime is None  # no model loaded, no heartbeat to the default Redis
