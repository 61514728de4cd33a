"""The page's tests run against the real service: Valkey, uvicorn serving app.main:create_app,
a `reel worker` subprocess with the tiny model, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Generous bounds for start-up on a busy two-core machine; they stop a hung test, they measure nothing.
STARTUP_SECONDS = 180


@dataclass(frozen=True)
class Service:
    url: str  # http://127.0.0.1:PORT
    key: str  # an API key of the tenant the page uses
    redis_url: str
    data_dir: Path

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key or self.key}"}, timeout=30)

    def new_key(self, tenant: str) -> str:
        """A key for another tenant, made with app.auth's own functions."""
        import redis

        from app.auth import create_key
        from app.jobs import JobStore
        from app.settings import Settings

        client = redis.Redis.from_url(self.redis_url)
        try:
            key, _key_id, _secret = create_key(JobStore(client, Settings(redis_url=self.redis_url)), tenant, "ui tests")
        finally:
            client.close()
        return key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_until(check, what: str, processes: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        for name, (process, log) in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"the {name} exited with {process.returncode} while waiting for {what}:\n{_tail(log)}")
        if check():
            return
        time.sleep(0.25)
    logs = "\n".join(f"--- {name}\n{_tail(log)}" for name, (_, log) in processes.items())
    raise RuntimeError(f"gave up waiting for {what}\n{logs}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (`make browser` installs it); "
                    "the page's tests never download a browser")
    return str(CHROMIUM)


@pytest.fixture(scope="module")
def service(chromium_path, valkey_server, tmp_path_factory):
    """uvicorn with the API and the page, and one worker with the tiny model, on the session's Valkey."""
    import redis

    # A database of its own: other tests flush theirs, and this module's service lives across its tests.
    redis_url = f"redis://127.0.0.1:{valkey_server.port}/7"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()

    root = tmp_path_factory.mktemp("ui-service")
    data_dir = root / "data"
    port = _free_port()
    env = {
        **os.environ,
        "REEL_REDIS_URL": redis_url,
        "REEL_DATA_DIR": str(data_dir),
        "REEL_STORAGE": "local",
        "REEL_MODEL": "tiny",
        "REEL_DEVICE": "cpu",
        # Small enough that a test can fill one tenant's queue and see the page's 429 message.
        "REEL_MAX_QUEUED_PER_TENANT": "3",
        "REEL_QUEUE_FULL_RETRY_AFTER_SECONDS": "30",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    processes: dict[str, tuple[subprocess.Popen, Path]] = {}
    api_log, worker_log = root / "api.log", root / "worker.log"
    with open(api_log, "wb") as api_out, open(worker_log, "wb") as worker_out:
        processes["API"] = (subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=api_out, stderr=subprocess.STDOUT,
        ), api_log)
        processes["worker"] = (subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--pool", "solo"],
            cwd=REPO, env=env, stdout=worker_out, stderr=subprocess.STDOUT,
        ), worker_log)
    url = f"http://127.0.0.1:{port}"
    try:
        def answers(path: str) -> bool:
            try:
                return httpx.get(url + path, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_until(lambda: answers("/healthz"), "the API to answer /healthz", processes)
        _wait_until(lambda: answers("/readyz"), "a worker with its model loaded (/readyz)", processes)
        key = Service(url, "", redis_url, data_dir).new_key("ui")
        yield Service(url=url, key=key, redis_url=redis_url, data_dir=data_dir)
    finally:
        for process, _ in processes.values():
            _stop(process)


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def page_errors():
    """Uncaught script errors of the pages a test opens; the test asserts there were none."""
    return []


@pytest.fixture
def new_page(browser, service, page_errors):
    """Open the page in a fresh context (its own localStorage); closes every context at the end."""
    contexts = []

    def open_page(viewport=None, color_scheme="dark"):
        context = browser.new_context(
            viewport=viewport or {"width": 1280, "height": 900},
            color_scheme=color_scheme,
            accept_downloads=True,
        )
        context.set_default_timeout(60_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        page.goto(service.url + "/")
        return page

    yield open_page
    for context in contexts:
        context.close()
