"""`reel worker`: a Celery worker on the given queues (one generation at a time by default)."""

from __future__ import annotations

import os

from app.queue import GENERATE_QUEUE, MAINTENANCE_QUEUE, WEBHOOK_QUEUE

KNOWN_QUEUES = (GENERATE_QUEUE, WEBHOOK_QUEUE, MAINTENANCE_QUEUE)


def run_worker(queues: str = "generate,webhooks,maintenance", concurrency: int = 1, pool: str = "solo",
               model: str | None = None, loglevel: str = "INFO") -> int:
    names = [name.strip() for name in queues.split(",") if name.strip()]
    unknown = [name for name in names if name not in KNOWN_QUEUES]
    if not names or unknown:
        raise SystemExit(f"reel worker: --queues must name some of {', '.join(KNOWN_QUEUES)}; got {queues!r}")
    if concurrency < 1:
        raise SystemExit(f"reel worker: --concurrency must be at least 1, got {concurrency}")
    if model:
        # Before the app is imported: its settings are read from the environment once.
        os.environ["REEL_MODEL"] = model

    from worker.celery_app import celery_app

    argv = ["worker", f"--queues={','.join(names)}", f"--pool={pool}", f"--concurrency={concurrency}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    celery_app.worker_main(argv)
    return 0
