"""Other Celery pools than the default solo one: under prefork each child loads the model
itself (the parent never runs torch, so the forked children do not hang), and under threads
the threads share one model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from app.jobs import Job, JobStore, new_id
from app.queue import make_celery, send_generate
from app.settings import Settings

from waiting import wait_until


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry.name))
            except (FileNotFoundError, IndexError, ValueError):
                continue
    return found


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_two_at_a_time_under_other_pools(pool, valkey_server, start_worker, tmp_path):
    url = f"redis://127.0.0.1:{valkey_server.port}/0"
    client = redis.Redis.from_url(url)
    client.flushall()
    settings = Settings(redis_url=url, data_dir=tmp_path)
    store, celery = JobStore(client, settings), make_celery(settings)
    worker = start_worker(url, tmp_path, model="tiny", args=("--pool", pool, "--concurrency", "2"))

    def serving():
        if worker.process.poll() is not None:
            raise AssertionError(f"worker exited:\n{worker.log()[-4000:]}")
        return [w for w in store.workers() if w.get("model_loaded")]

    if pool == "prefork":
        # One heartbeat per child, each from a process forked by the worker, none from the worker itself.
        heartbeats = wait_until(lambda: len(found := serving()) >= 2 and found, what="both children")
        pids = {w["pid"] for w in heartbeats}
        assert worker.pid not in pids and pids <= children(worker.pid)
    else:
        heartbeats = wait_until(serving, what="the heartbeat")
        assert {w["pid"] for w in heartbeats} == {worker.pid}

    ids = []
    for seed in range(4):
        job = Job(id=new_id("video"), tenant="acme", model="tiny", prompt="a red circle", width=64, height=64,
                  seconds=1, fps=8, frames=9, seed=seed, steps=2, guidance=4.0, created_at=int(time.time()))
        store.create(job)
        send_generate(celery, job.id)
        ids.append(job.id)
    done = [wait_until(lambda i=i: (j := store.get(i)).is_final and j, what=f"{i}") for i in ids]
    assert [j.status for j in done] == ["completed"] * 4, [j.error for j in done]
    assert all((settings.assets_dir / j.id / "video.mp4").is_file() for j in done)
    worker.stop()
    client.close()
