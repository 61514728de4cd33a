"""`reel serve` as a user runs it: a subprocess that starts Valkey, a worker and the API, serves a
job, restarts its worker when that dies, keeps its data across a restart, and leaves no process
behind when it is stopped with SIGTERM or Ctrl-C (SIGINT)."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import av
import httpx
import pytest

from waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> dict[int, str]:
    """The live child processes of `pid` with their command lines (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            state = stat.rsplit(")", 1)[1].split()[0]
            if parent == pid and state != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


class Serve:
    def __init__(self, data_dir: Path, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {name: value for name, value in os.environ.items() if not name.startswith("REEL_")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir),
                 "--model", "tiny"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def key(self) -> str:
        match = wait_until(lambda: self._check() and re.search(r"API key:\s+(\S+)", self.log()), what="the API key")
        return match.group(1)

    def _check(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"reel serve exited with {self.process.returncode}:\n{self.log()[-4000:]}")
        return True

    def ready(self) -> None:
        def answers():
            self._check()
            try:
                return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, what="/readyz")

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise


@pytest.fixture
def serve_factory(tmp_path):
    started: list[Serve] = []

    def start(data_dir: Path) -> Serve:
        serve = Serve(data_dir, tmp_path / f"serve-{len(started)}.log")
        started.append(serve)
        return serve

    yield start
    for serve in started:
        if serve.process.poll() is None:
            serve.stop()
            # Whatever it left behind must not outlive the test.
            for pid in children(serve.process.pid):
                os.kill(pid, signal.SIGKILL)


def run_job(http: httpx.Client, **fields) -> dict:
    response = http.post("/v1/videos", json={"prompt": "a red circle moving right", "steps": 2, **fields})
    assert response.status_code == 200, response.text
    video_id = response.json()["id"]
    return wait_until(lambda: (v := http.get(f"/v1/videos/{video_id}").json())["status"] in ("completed", "failed") and v,
                      what=f"{video_id} to finish")


def test_reel_serve_runs_everything_and_stops_cleanly(serve_factory, tmp_path):
    data_dir = tmp_path / "reel-data"
    serve = serve_factory(data_dir)
    key = serve.key()
    serve.ready()
    processes = children(serve.process.pid)
    valkey = [pid for pid, cmd in processes.items() if "valkey-server" in cmd]
    workers = [pid for pid, cmd in processes.items() if "app.cli worker" in cmd]
    assert len(valkey) == 1 and len(workers) == 1, processes

    with httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        assert http.get("/v1/videos").status_code == 200
        assert httpx.get(f"{serve.url}/v1/videos").status_code == 401
        models = http.get("/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["tiny"]

        done = run_job(http, seconds=2)
        assert done["status"] == "completed", done["error"]
        content = http.get(f"/v1/videos/{done['id']}/content")
        assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
        with av.open(io.BytesIO(content.content)) as container:
            assert len(list(container.decode(video=0))) == 17
        assert (data_dir / "assets" / done["id"] / "video.mp4").is_file()

        # A worker that dies is replaced, and the replacement serves jobs.
        os.kill(workers[0], signal.SIGKILL)
        replacement = wait_until(lambda: [pid for pid, cmd in children(serve.process.pid).items()
                                          if "app.cli worker" in cmd and pid != workers[0]], what="a new worker")
        again = run_job(http, seconds=0)
        assert again["status"] == "completed", again["error"]

    assert serve.stop(signal.SIGTERM) == 0
    for pid in [*valkey, *replacement]:
        assert not alive(pid), f"process {pid} outlived reel serve"
    assert "reel serve: stopped" in serve.log()
    assert any((data_dir / "valkey" / "appendonlydir").iterdir())

    # Started again on the same data dir: the same key works and the jobs are still there (append-only file).
    serve = serve_factory(data_dir)
    assert serve.key() == key
    serve.ready()
    with httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        listed = http.get("/v1/videos").json()["data"]
        assert {v["id"] for v in listed} == {done["id"], again["id"]}
        assert http.get(f"/v1/videos/{done['id']}/content").status_code == 200
    remaining = children(serve.process.pid)
    assert serve.stop(signal.SIGINT) == 0  # Ctrl-C
    for pid in remaining:
        assert not alive(pid), f"process {pid} outlived reel serve"


def test_reel_serve_refuses_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {name: value for name, value in os.environ.items() if not name.startswith("REEL_")}
        result = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--data-dir",
                                 str(tmp_path / "d"), "--model", "tiny"], env=env, capture_output=True, text=True,
                                timeout=120)
    assert result.returncode == 1
    assert f"{port} is already in use" in result.stderr
