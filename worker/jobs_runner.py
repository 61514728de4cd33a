"""The plain functions behind the worker's tasks: run one job, sweep expired assets.

They take everything they use as arguments (store, storage, pipeline, a way to send
webhooks), so they read the same under any Celery pool and in tests.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import redis

from app.jobs import Job, JobStore
from app.metrics import observe_step_seconds
from app.storage import Storage
from app.webhooks import subscribed
from worker import media

log = logging.getLogger("reel.worker")

# The store is restarting or unreachable (BusyLoadingError, while it replays its append-only file,
# is a ConnectionError too).
STORE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

ASSET_CONTENT_TYPES = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}
ASSET_FILENAMES = {"video": "video.mp4", "thumbnail": "thumbnail.webp", "spritesheet": "spritesheet.jpg"}


class JobCancelled(Exception):
    """The job's cancel flag was set (or its record vanished): stop at this step."""


class DeadlineExceeded(Exception):
    """The job ran longer than settings.job_deadline_seconds."""


class WorkerStopping(Exception):
    """The worker is shutting down: give the job back to the queue, unfinished."""


class InvalidJob(Exception):
    """The served model cannot make what the job asks for (the API's limits are wider than its own)."""


@dataclass
class JobContext:
    settings: object  # WorkerSettings
    store: JobStore
    storage: Storage
    pipeline: object  # model.TextToVideo
    worker_id: str
    send_event: Callable[[Job, str], None]  # (job, "video.started" | ...): enqueue that webhook
    stopping: threading.Event | None = None  # set when the worker is shutting down


def patiently(call, *args, patience: float = 120.0, **kwargs):
    """`call(*args)`, tried again while the store is unreachable, for up to `patience` seconds.

    For the transitions a job cannot do without (start, complete, fail): a store that
    restarts must not turn a finished video into a failed job. If it stays away longer, the
    error propagates, the task is not acknowledged, and Redis redelivers it later."""
    deadline = time.monotonic() + patience
    delay = 0.25
    while True:
        try:
            return call(*args, **kwargs)
        except STORE_ERRORS as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("store unreachable (%s); trying again in %.1f s", error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def asset_key(job_id: str, variant: str) -> str:
    return f"{job_id}/{ASSET_FILENAMES[variant]}"


def store_assets(storage: Storage, job_id: str, assets: media.Assets) -> dict[str, dict]:
    """Put the three files under the job's id (the same keys on every attempt, so a
    redelivered job overwrites what an earlier one left) and describe them for the record."""
    stored = {}
    for variant in ("video", "thumbnail", "spritesheet"):
        data = getattr(assets, variant)
        stored[variant] = storage.put(asset_key(job_id, variant), data, ASSET_CONTENT_TYPES[variant]).as_asset()
    return stored


def run_job(job_id: str, context: JobContext) -> str:
    """Run one job to a final state. Returns what happened: "completed", "failed",
    "cancelled" or "skipped" (already finished, cancelled or deleted: a redelivery).

    Raises WorkerStopping when the worker is shutting down mid-job (the task gives the
    job back to the queue); every other failure is recorded on the job as `failed`.
    """
    store, settings = context.store, context.settings
    job = patiently(store.get, job_id)
    if job is None or job.is_final:
        log.info("job %s: %s, nothing to do", job_id, "gone" if job is None else job.status)
        return "skipped"
    if job.status == "in_progress" and job.attempts >= settings.max_attempts:
        # Each earlier attempt ended with its worker gone (killed, out of memory): stop retrying.
        patiently(store.fail, job_id, "worker_lost", f"the job stopped its worker {job.attempts} times; giving up")
        _report(context, job, "video.failed")
        return "failed"
    if not patiently(store.start, job_id, context.worker_id):
        return "skipped"
    _report(context, job, "video.started")
    log.info("job %s: started (%s, %s frames, %s steps)", job_id, job.size, job.frames, job.steps)

    try:
        frames = _generate(job, context)
        assets = media.encode_assets(frames, fps=job.fps)
        if patiently(store.is_cancel_requested, job_id):
            raise JobCancelled()
        stored = store_assets(context.storage, job_id, assets)
        if not patiently(store.complete, job_id, stored):
            after = patiently(store.get, job_id)
            if after is not None and after.status == "completed":
                # Another attempt finished first under the same keys: those assets are the job's.
                return "skipped"
            # Cancelled (or deleted) between the last step and now: keep no assets for it.
            context.storage.delete_prefix(job_id)
            if after is not None and after.status == "cancelled":
                _report(context, job, "video.cancelled")
                return "cancelled"
            return "skipped"
    except JobCancelled:
        if patiently(store.mark_cancelled, job_id):
            _report(context, job, "video.cancelled")
        log.info("job %s: cancelled", job_id)
        return "cancelled"
    except WorkerStopping:
        log.info("job %s: worker stopping, the job goes back to the queue", job_id)
        raise
    except DeadlineExceeded:
        _fail(context, job, "deadline_exceeded", f"the job ran longer than {settings.job_deadline_seconds} s")
        return "failed"
    except InvalidJob as error:
        _fail(context, job, "invalid_request", str(error))
        return "failed"
    except STORE_ERRORS:
        # The store stayed away: leave the task unacknowledged, so that it is delivered again.
        raise
    except Exception as error:
        log.exception("job %s failed", job_id)
        _fail(context, job, "internal_error", f"{type(error).__name__}: {error}")
        return "failed"
    _report(context, job, "video.completed")
    log.info("job %s: completed", job_id)
    return "completed"


def _generate(job: Job, context: JobContext):
    from model import VideoSpec

    spec = VideoSpec(
        prompt=job.prompt,
        negative_prompt=job.negative_prompt or "",
        width=job.width,
        height=job.height,
        frames=job.frames,
        seed=job.seed,
        steps=job.steps,
        guidance=job.guidance,
    )
    try:
        context.pipeline.validate(spec)
    except ValueError as error:
        raise InvalidJob(f"model {job.model!r} cannot make this video: {error}") from None
    deadline = time.monotonic() + context.settings.job_deadline_seconds
    last_progress = -1
    last_step_at: float | None = None

    def on_step(step: int, steps: int) -> None:
        nonlocal last_progress, last_step_at
        now = time.monotonic()
        # Sampling is most of the work; 100 is written only when the assets are stored.
        progress = min(99, int(100 * step / steps))
        try:
            if last_step_at is not None:
                # The first interval also holds text encoding, so step time starts at the second.
                observe_step_seconds(context.store, now - last_step_at)
            last_step_at = now
            if progress != last_progress:
                # One write per percent: a progress event per step up to 100 steps, no more.
                stop = context.store.set_progress(job.id, progress)
                last_progress = progress
                _report(context, job, "video.progress")
            else:
                stop = context.store.is_cancel_requested(job.id)
        except STORE_ERRORS as error:
            # Progress can wait for the store to come back; the video need not.
            log.warning("job %s: progress not recorded (%s)", job.id, error)
            stop = False
        if stop:
            raise JobCancelled()
        if context.stopping is not None and context.stopping.is_set():
            raise WorkerStopping()
        if time.monotonic() > deadline:
            raise DeadlineExceeded()

    (frames,) = context.pipeline.generate([spec], on_step=on_step)
    return frames


def _fail(context: JobContext, job: Job, code: str, message: str) -> None:
    if patiently(context.store.fail, job.id, code, message):
        _report(context, job, "video.failed")
    log.warning("job %s failed: %s: %s", job.id, code, message)


def _report(context: JobContext, job: Job, event_type: str) -> None:
    """Send the webhook for this event if the job asked for it; a broker hiccup must not fail the job."""
    if not subscribed(job, event_type):
        return
    try:
        current = context.store.get(job.id)  # the event carries the job as it now stands
        if current is not None:
            context.send_event(current, event_type)
    except Exception:
        log.warning("job %s: could not enqueue the %s webhook", job.id, event_type, exc_info=True)


def sweep_expired_assets(store: JobStore, storage: Storage, now: float | None = None) -> int:
    """Delete the assets of completed jobs past their expires_at; returns how many jobs were swept."""
    swept = 0
    for job_id in store.expired_jobs(now):
        storage.delete_prefix(job_id)
        store.mark_expired(job_id)
        swept += 1
    if swept:
        log.info("swept the assets of %d expired job(s)", swept)
    return swept
