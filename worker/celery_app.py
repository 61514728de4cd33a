"""The worker's Celery app: queues, acknowledgements, redelivery, and the per-process runtime.

Reliability (DESIGN.md): a task is acknowledged only after it ran (`task_acks_late`),
is given back if its process dies (`task_reject_on_worker_lost`), one is reserved at a
time (`worker_prefetch_multiplier=1`), and Redis hands an unacknowledged task to
another worker only after `visibility_timeout`, which is kept above the job deadline
the task enforces itself. Job state lives in JobStore, never in a result backend.

Each worker process loads the pipeline once (`worker_process_init`: the pool child
under prefork, the worker itself under solo, so torch never runs in a prefork parent)
and then publishes a heartbeat saying which model it serves. The main process of a
worker that consumes `maintenance` sweeps expired assets on a timer.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import redis
from celery import signals
from kombu import Exchange, Queue

from app.jobs import JobStore
from app.queue import GENERATE_QUEUE, MAINTENANCE_QUEUE, WEBHOOK_QUEUE, make_celery
from app.settings import Settings
from app.storage import Storage, make_storage

log = logging.getLogger("reel.worker")


class WorkerSettings(Settings):
    """The service's settings plus the knobs only a worker reads (same REEL_ prefix)."""

    # Seconds after which Redis gives an unacknowledged task to another worker; None keeps
    # the broker default (above the job deadline). Lower only where jobs are short.
    visibility_timeout_seconds: int | None = None
    unacked_restore_interval_seconds: int = 10  # how often a worker looks for tasks of dead workers
    heartbeat_interval_seconds: float = 5.0  # well inside worker_heartbeat_ttl_seconds
    sweep_interval_seconds: float = 300.0  # expired assets are deleted this often
    max_attempts: int = 3  # a job that took down its worker this many times is failed, not retried forever
    # torch's intra-op threads for sampling; 0 keeps torch's default (all cores). On a machine
    # shared with other work, fewer threads than cores avoids threads waiting on each other.
    torch_threads: int = 0


def resolve_device(setting: str) -> str:
    """`auto` is the first GPU when one is visible, else the CPU; anything else is taken as given."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _transport_options(settings: WorkerSettings, base: dict) -> dict:
    options = dict(base)
    if settings.visibility_timeout_seconds is not None:
        options["visibility_timeout"] = settings.visibility_timeout_seconds
    # Scan for abandoned tasks every interval (the default scans only every 10th interval).
    options["unacked_restore_interval"] = settings.unacked_restore_interval_seconds
    options["unacked_restore_throttle"] = 1
    return options


def make_worker_celery(settings: WorkerSettings):
    app = make_celery(settings)
    app.conf.update(
        # Each queue on its own direct exchange, as Celery makes them for the API's send_task:
        # a bare Queue(name) would be bound to the default exchange and routing key, and a
        # message sent to one queue would then land in all three.
        task_queues=tuple(Queue(name, Exchange(name), routing_key=name)
                          for name in (GENERATE_QUEUE, WEBHOOK_QUEUE, MAINTENANCE_QUEUE)),
        include=["worker.tasks"],
        # The API gives up on a broker quickly (it answers 503); a worker waits for it to come back.
        broker_connection_max_retries=None,
        broker_connection_timeout=max(settings.broker_send_timeout, 10.0),
        broker_transport_options=_transport_options(settings, app.conf.broker_transport_options),
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return app


settings = WorkerSettings()
celery_app = make_worker_celery(settings)


def model_name(requested: str) -> str:
    """How the served model is named to clients: a checkpoint directory by its last part."""
    path = Path(requested)
    return path.name if path.is_dir() else requested


@dataclass
class Runtime:
    """What one worker process holds: the store, the storage and (once loaded) the pipeline."""

    settings: WorkerSettings
    store: JobStore
    storage: Storage
    worker_id: str
    pipeline: object | None = None
    current_job: str | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    _load_lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def create(cls, settings: WorkerSettings) -> "Runtime":
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_socket_timeout,
            socket_connect_timeout=settings.redis_connect_timeout,
            health_check_interval=30,
        )
        worker_id = f"{socket.gethostname()}-{os.getpid()}"
        return cls(settings=settings, store=JobStore(client, settings), storage=make_storage(settings), worker_id=worker_id)

    def load_pipeline(self):
        """The pipeline, loaded on first use and kept for the life of the process."""
        with self._load_lock:
            if self.pipeline is None:
                import torch

                from model import TextToVideo

                device = resolve_device(self.settings.device)
                if self.settings.torch_threads:
                    torch.set_num_threads(self.settings.torch_threads)
                log.info("loading model %s on %s", self.settings.model, device)
                self.pipeline = TextToVideo.load(self.settings.model, device=device)
                log.info("model %s loaded (%s)", self.settings.model, self.pipeline.config.name)
            return self.pipeline

    def ensure_ready(self) -> None:
        """Load the model and start heartbeats (once per process). A model that cannot be
        loaded stops the worker before it takes a task: the jobs wait for a worker that can."""
        with self._load_lock:
            first = self.pipeline is None
        try:
            self.load_pipeline()
        except Exception as error:
            log.critical("cannot load model %r: %s", self.settings.model, error)
            raise SystemExit(f"reel worker: cannot load model {self.settings.model!r}: {error}") from None
        if first:
            self.start_heartbeat()

    def heartbeat_info(self) -> dict:
        config = self.pipeline.config
        return {
            "model": model_name(self.settings.model),
            "architecture": config.name,
            "model_loaded": True,
            "sizes": [f"{width}x{height}" for width, height in config.sizes],
            "max_side": config.max_side,
            "seconds": list(config.seconds),
            "fps": config.fps,
            "default_steps": config.flow.steps,
            "default_guidance": config.flow.guidance,
            "current_job": self.current_job,
            "pid": os.getpid(),
        }

    def every(self, interval: float, action, name: str) -> None:
        """Run `action` now and then every `interval` seconds on a daemon thread until stopped."""

        def loop():
            while not self.stopping.is_set():
                try:
                    action()
                except Exception:
                    # The store may be restarting: keep going, the next round will try again.
                    log.warning("%s failed", name, exc_info=True)
                self.stopping.wait(interval)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start_heartbeat(self) -> None:
        self.every(self.settings.heartbeat_interval_seconds,
                   lambda: self.store.heartbeat(self.worker_id, self.heartbeat_info()), "heartbeat")

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=2)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """This process's runtime (made on first use, e.g. by a task under the threads pool)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.worker_id != f"{socket.gethostname()}-{os.getpid()}":
            _runtime = Runtime.create(settings)
        return _runtime


def consumes(queue: str) -> bool:
    return queue in celery_app.amqp.queues.consume_from if celery_app.amqp.queues.consume_from else True


# Celery's signals are process-wide: a worker of another app started in this process (a test's, say)
# sends them too, and must not load the model, start this app's heartbeat or stop its jobs.
# worker_init names the worker (and so its app) before its pool starts. The answer is kept in the
# environment, which prefork children inherit whether they are forked or spawned.
SERVING_VARIABLE = "REEL_WORKER_SERVES_THIS_APP"


@signals.worker_init.connect
def _note_worker(sender=None, **_):
    os.environ[SERVING_VARIABLE] = "1" if getattr(sender, "app", None) is celery_app else "0"


def serving() -> bool:
    return os.environ.get(SERVING_VARIABLE) == "1"


@signals.worker_process_init.connect
def _load_model(**_):
    # The process that runs the tasks: the prefork child, or the solo worker itself.
    if serving() and consumes(GENERATE_QUEUE):
        runtime().ensure_ready()


@signals.worker_ready.connect
def _ready(sender=None, **_):
    if not serving():
        return
    pool = getattr(sender, "pool", None)
    if consumes(GENERATE_QUEUE) and pool is not None and "prefork" not in type(pool).__module__:
        # The threads pool has no worker_process_init; its threads share this process's model.
        runtime().ensure_ready()
    if consumes(MAINTENANCE_QUEUE):
        from worker.jobs_runner import sweep_expired_assets

        current = runtime()
        current.every(settings.sweep_interval_seconds, lambda: sweep_expired_assets(current.store, current.storage),
                      "sweeper")


@signals.worker_shutting_down.connect
def _shutting_down(**_):
    # Read by the running job at its next step: it stops and goes back to the queue.
    if serving() and _runtime is not None:
        _runtime.stopping.set()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _shutdown(**_):
    if serving() and _runtime is not None:
        _runtime.stop()
