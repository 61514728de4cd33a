"""The Celery client the API sends tasks with, and the base the worker's app builds on.

The API never imports the worker's code: it sends tasks by name and never waits on a
result (job state lives in JobStore, not in a result backend).
"""

from __future__ import annotations

from celery import Celery

GENERATE_TASK = "worker.tasks.generate_video"
WEBHOOK_TASK = "worker.tasks.deliver_webhook"
SWEEP_TASK = "worker.tasks.sweep_expired"
GENERATE_QUEUE = "generate"
WEBHOOK_QUEUE = "webhooks"
MAINTENANCE_QUEUE = "maintenance"


def make_celery(settings) -> Celery:
    """A Celery app on settings.redis_url with the reliability settings of DESIGN.md."""
    app = Celery("reel", broker=settings.redis_url)
    app.conf.update(
        task_default_queue=GENERATE_QUEUE,
        task_routes={
            GENERATE_TASK: {"queue": GENERATE_QUEUE},
            WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE},
            SWEEP_TASK: {"queue": MAINTENANCE_QUEUE},
        },
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # A broker that does not answer must fail a send quickly (the API answers 503).
        broker_connection_timeout=settings.broker_send_timeout,
        broker_connection_max_retries=1,
        broker_transport_options={
            # Above the longest job, so Redis does not redeliver a task still running.
            "visibility_timeout": max(3600, 2 * settings.job_deadline_seconds),
            "socket_timeout": settings.broker_send_timeout,
            "socket_connect_timeout": settings.broker_send_timeout,
        },
    )
    return app


# A failed publish is retried briefly, then the error surfaces (and the API answers 503).
_SEND_RETRY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.5}


def send_generate(celery: Celery, job_id: str) -> None:
    celery.send_task(GENERATE_TASK, args=[job_id], queue=GENERATE_QUEUE, retry=True, retry_policy=_SEND_RETRY)


def send_webhook(celery: Celery, message: dict) -> None:
    celery.send_task(WEBHOOK_TASK, args=[message], queue=WEBHOOK_QUEUE, retry=True, retry_policy=_SEND_RETRY)
