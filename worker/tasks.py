"""The worker's tasks. Thin: parse, call a plain function, report.

Names and queues are the API's (app/queue.py): it sends these by name and never waits.
"""

from __future__ import annotations

import logging

from celery.exceptions import Reject

from app import webhooks
from app.jobs import is_id
from worker.celery_app import celery_app, runtime
from worker.jobs_runner import JobContext, WorkerStopping, run_job, sweep_expired_assets

log = logging.getLogger("reel.worker")


@celery_app.task(name="worker.tasks.generate_video", ignore_result=True)
def generate_video(job_id: str) -> str:
    if not isinstance(job_id, str) or not is_id(job_id, "video"):
        # Nothing can ever run it: acknowledge it and say why, rather than retry forever.
        log.error("generate_video: not a video id: %r", job_id)
        return "invalid"
    current = runtime()
    context = JobContext(
        settings=current.settings,
        store=current.store,
        storage=current.storage,
        pipeline=current.load_pipeline(),
        worker_id=current.worker_id,
        send_event=lambda job, event_type: webhooks.enqueue_webhook(celery_app, current.settings, job, event_type),
        stopping=current.stopping,
    )
    current.current_job = job_id
    try:
        return run_job(job_id, context)
    except WorkerStopping:
        # Back to the queue at once, for this worker after its restart or for another one.
        raise Reject("worker shutting down", requeue=True) from None
    finally:
        current.current_job = None


@celery_app.task(name="worker.tasks.deliver_webhook", ignore_result=True)
def deliver_webhook(message: dict) -> str:
    # One attempt; a failed one is put in the store's due set and sent again when due.
    current = runtime()
    return webhooks.deliver(current.store, celery_app, current.settings, message).reason


@celery_app.task(name="worker.tasks.sweep_expired", ignore_result=True)
def sweep_expired() -> int:
    current = runtime()
    return sweep_expired_assets(current.store, current.storage)
