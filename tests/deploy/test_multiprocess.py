"""The service split the way a multi-machine deployment splits it, as separate OS processes.

One Valkey server, an S3 server, two `reel api` processes, two `reel worker`
processes on the `generate` queue (the tiny model) and one on `webhooks` and
`maintenance` (as compose.yaml splits them), each started exactly as an operator
would start them on its own machine: by command line and REEL_ environment
variables, sharing nothing but Redis and the bucket. Jobs go to both APIs; both
generation workers take some; every job's signed webhook arrives; a worker killed
with SIGKILL in the middle of a job loses nothing: Redis gives the unacknowledged
task to the other worker, which runs it again from the start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis

from app.jobs import JobStore
from app.settings import Settings

API_KEY = "sk-reel-deploy-test-0123456789abcdef"
JOBS = 30
# Redis hands a task to another worker when it has gone unacknowledged this long.
# Every job here takes far less (tiny model), so only a dead worker's task comes back.
VISIBILITY_TIMEOUT_SECONDS = 10
# Bounds on waiting, so that a hang fails with the processes' logs instead of running forever.
START_TIMEOUT = 180
JOBS_TIMEOUT = 300

pytestmark = pytest.mark.slow


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:] if self.log.exists() else []
        return f"--- {self.name} (pid {self.popen.pid}, exit {self.popen.poll()}) ---\n" + "\n".join(text)


class Deployment:
    def __init__(self, root: Path, environment: dict[str, str]):
        self.root = root
        self.environment = environment
        self.processes: list[Process] = []
        self.started = time.monotonic()

    def start(self, name: str, *arguments: str) -> Process:
        log = self.root / f"{name}.log"
        popen = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *arguments],
            env=self.environment, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.root,
        )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(process.tail() for process in self.processes)

    def wait_for(self, condition, what: str, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            for process in self.processes:
                if process.name.startswith("api") and not process.alive():
                    pytest.fail(f"{process.name} exited while waiting for {what}\n{self.logs()}")
            time.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}\n{self.logs()}")

    def mark(self, what: str) -> None:
        # Where the time went, for whoever reads a slow run's output (-s); never asserted on.
        print(f"[deploy] {time.monotonic() - self.started:7.1f} s  {what}", flush=True)

    def stop(self) -> None:
        for process in self.processes:
            if process.alive():
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=5)


class WebhookReceiver:
    """An HTTP server on loopback that records every delivery (headers and body) and answers 204."""

    def __init__(self):
        self.deliveries: list[tuple[dict, bytes]] = []
        lock = threading.Lock()
        deliveries = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/reel"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def completed_ids(self) -> set[str]:
        return {json.loads(body)["data"]["id"] for _, body in list(self.deliveries)
                if json.loads(body)["type"] == "video.completed"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_environment(redis_url: str, s3_endpoint: str, bucket: str, credentials: dict) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("REEL_")}
    environment.update(credentials)
    environment.update({
        "REEL_REDIS_URL": redis_url,
        "REEL_STORAGE": "s3",
        "REEL_S3_BUCKET": bucket,
        "REEL_S3_PREFIX": "deploy-test",
        "REEL_S3_ENDPOINT_URL": s3_endpoint,
        "REEL_S3_REGION": "us-east-1",
        "REEL_CONTENT_REDIRECT": "true",
        "REEL_MODEL": "tiny",
        "REEL_DEVICE": "cpu",
        "REEL_API_KEY": API_KEY,
        "REEL_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_TIMEOUT_SECONDS),
        "REEL_UNACKED_RESTORE_INTERVAL_SECONDS": "1",
        "REEL_HEARTBEAT_INTERVAL_SECONDS": "1",
        "REEL_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        # Four services share this machine's cores: one thread each, as on a machine of their own.
        "OMP_NUM_THREADS": "1",
    })
    return environment


@pytest.fixture
def deployment(tmp_path, redis_url, s3_endpoint, s3_bucket, s3_credentials):
    deployment = Deployment(tmp_path, service_environment(redis_url, s3_endpoint, s3_bucket, s3_credentials))
    yield deployment
    deployment.stop()


def worker_id_of(process: Process, store: JobStore) -> str | None:
    for worker in store.workers():
        if worker.get("pid") == process.popen.pid:
            return worker["worker_id"]
    return None


def create(client: httpx.Client, **fields) -> dict:
    response = client.post("/v1/videos", json={"model": "tiny", "size": "64x64", "seconds": "1", "steps": 4, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def test_two_apis_two_workers_and_a_worker_killed_mid_job(deployment, receiver, redis_url, s3_bucket):
    store = JobStore(redis.Redis.from_url(redis_url), Settings(redis_url=redis_url))
    ports = [free_port(), free_port()]
    apis = [deployment.start(f"api{i}", "api", "--host", "127.0.0.1", "--port", str(port)) for i, port in enumerate(ports)]
    workers = [deployment.start(f"worker{i}", "worker", "--queues", "generate") for i in range(2)]
    deployment.start("worker-ops", "worker", "--queues", "webhooks,maintenance", "--pool", "threads", "--concurrency", "4")
    clients = [
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
        for port in ports
    ]

    def apis_answer():
        try:
            return all(client.get("/healthz").status_code == 200 for client in clients)
        except httpx.TransportError:
            return False

    deployment.wait_for(apis_answer, "both APIs to answer", START_TIMEOUT)
    worker_ids = deployment.wait_for(
        lambda: (ids := [worker_id_of(worker, store) for worker in workers]) and all(ids) and ids,
        "both workers to load the model and report", START_TIMEOUT,
    )
    assert len(set(worker_ids)) == 2
    deployment.mark("two APIs and two workers up")

    # Thirty jobs, alternating between the two APIs.
    jobs = [
        create(clients[i % 2], prompt=f"a red circle moving right, take {i}", seed=i,
               webhook_url=receiver.url, webhook_events=["video.completed"])
        for i in range(JOBS)
    ]
    ids = [job["id"] for job in jobs]

    def all_final():
        records = [store.get(job_id) for job_id in ids]
        return records if all(record.is_final for record in records) else None

    deployment.mark(f"{JOBS} jobs created")
    records = deployment.wait_for(all_final, f"{JOBS} jobs to finish", JOBS_TIMEOUT)
    deployment.mark(f"{JOBS} jobs finished")
    assert [record.status for record in records] == ["completed"] * JOBS, [
        (record.id, record.status, record.error) for record in records if record.status != "completed"
    ]
    took = {worker_id: sum(record.worker_id == worker_id for record in records) for worker_id in worker_ids}
    assert all(count > 0 for count in took.values()), f"one worker took every job: {took}"
    assert sum(took.values()) == JOBS

    # Either API serves any job: a 302 to a presigned URL of the bucket, which serves the MP4.
    for index, job_id in enumerate(ids[:4]):
        response = clients[(index + 1) % 2].get(f"/v1/videos/{job_id}/content")
        assert response.status_code == 302, response.text
        location = response.headers["location"]
        assert f"/{s3_bucket}/deploy-test/{job_id}/video.mp4" in location and "X-Amz-Expires=" in location
        video = httpx.get(location)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert clients[0].get(f"/v1/videos/{ids[1]}").json()["status"] == "completed"

    # The webhooks worker delivered every job's video.completed, signed with the tenant's secret.
    deployment.wait_for(lambda: receiver.completed_ids() >= set(ids), "every job's video.completed webhook", JOBS_TIMEOUT)
    from standardwebhooks import Webhook

    verifier = Webhook(store.tenant_webhook_secret("default"))
    for headers, body in list(receiver.deliveries):
        assert verifier.verify(body, headers)["data"]["status"] == "completed"
    deployment.mark("webhooks delivered")

    # A long job; the worker that takes it is killed with SIGKILL while it samples.
    slow = create(clients[0], prompt="a blue square bouncing", size="128x128", seconds="4", steps=100, seed=7)

    def running_mid_job():
        record = store.get(slow["id"])
        return record if record.status == "in_progress" and 0 < record.progress < 90 else None

    record = deployment.wait_for(running_mid_job, "the long job to be mid-way on a worker", JOBS_TIMEOUT)
    deployment.mark(f"long job at {record.progress}% on {record.worker_id}: killing that worker")
    victim_index = worker_ids.index(record.worker_id)
    victim, survivor_id = workers[victim_index], worker_ids[1 - victim_index]
    os.kill(victim.popen.pid, signal.SIGKILL)
    victim.popen.wait(timeout=10)
    assert victim.popen.returncode == -signal.SIGKILL

    # More jobs after the loss: the survivor takes these and, once Redis gives it back, the lost one.
    after = [create(clients[i % 2], prompt=f"a green triangle, after the crash {i}", seed=100 + i) for i in range(3)]
    final_ids = [slow["id"], *(job["id"] for job in after)]

    def finished_after_loss():
        records = [store.get(job_id) for job_id in final_ids]
        return records if all(record.is_final for record in records) else None

    records = deployment.wait_for(
        finished_after_loss, "the killed worker's job to be redelivered and finish",
        JOBS_TIMEOUT + VISIBILITY_TIMEOUT_SECONDS,
    )
    deployment.mark("the lost job and the later ones finished")
    assert [record.status for record in records] == ["completed"] * len(final_ids)
    lost = records[0]
    assert lost.worker_id == survivor_id
    assert lost.attempts == 2, "the job ran twice: once on the killed worker, once on the survivor"
    assert all(record.worker_id == survivor_id for record in records[1:])
    # The redelivered job's assets are whole: the survivor wrote them from the start.
    response = clients[1].get(f"/v1/videos/{slow['id']}/content", follow_redirects=True)
    assert response.status_code == 200 and response.content[4:8] == b"ftyp"
    thumbnail = clients[0].get(f"/v1/videos/{slow['id']}/content", params={"variant": "thumbnail"}, follow_redirects=True)
    assert thumbnail.status_code == 200 and thumbnail.content[:4] == b"RIFF"
    assert all(process.alive() for process in [*apis, workers[1 - victim_index]]), deployment.logs()
