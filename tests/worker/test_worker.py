"""Jobs through a real `reel worker` (tiny model, solo pool) on a real Valkey, without the HTTP API.

The test process plays the API's part with the same code the API uses: JobStore to write
the job, app.queue to send the task by name.
"""

from __future__ import annotations

import io
import time

import av
import numpy as np
import pytest
import redis
from PIL import Image

from app.jobs import Job, JobStore, new_id
from app.queue import SWEEP_TASK, make_celery, send_generate
from app.settings import Settings
from app.storage import LocalStorage

from waiting import wait_until

ASSET_TTL = 3600


class Service:
    def __init__(self, redis_url: str, data_dir):
        self.settings = Settings(redis_url=redis_url, data_dir=data_dir, asset_ttl_seconds=ASSET_TTL)
        self.redis = redis.Redis.from_url(redis_url)
        self.store = JobStore(self.redis, self.settings)
        self.storage = LocalStorage(self.settings.assets_dir)
        self.celery = make_celery(self.settings)

    def submit(self, prompt: str = "a red circle moving right on a white background", *, width=64, height=64,
               seconds=2, steps=3, seed=7, guidance=4.0, **fields) -> Job:
        job = Job(id=new_id("video"), tenant="acme", model="tiny", prompt=prompt, width=width, height=height,
                  seconds=seconds, fps=8, frames=1 + 8 * seconds, seed=seed, steps=steps, guidance=guidance,
                  created_at=int(time.time()), **fields)
        assert self.store.create(job).created
        send_generate(self.celery, job.id)
        return job

    def wait_final(self, job_id: str, timeout: float = 180.0) -> Job:
        return wait_until(lambda: (job := self.store.get(job_id)) is not None and job.is_final and job, timeout, 0.1,
                          f"job {job_id} to finish")

    def wait_progress(self, job_id: str) -> Job:
        return wait_until(lambda: (job := self.store.get(job_id)).progress > 0 and job, 180, 0.05,
                          f"job {job_id} to make progress")

    def event_types(self, job_id: str) -> list[str]:
        return [event_type for _, event_type, _ in self.store.events(job_id)]


@pytest.fixture(scope="module")
def service(module_redis_url, start_worker, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    service = Service(module_redis_url, data_dir)
    worker = start_worker(module_redis_url, data_dir, model="tiny", asset_ttl_seconds=ASSET_TTL)
    service.heartbeat = worker.wait_ready(service.store)
    service.worker = worker
    yield service
    service.redis.close()


def test_heartbeat_says_what_the_worker_serves(service):
    info = service.heartbeat
    assert info["model"] == "tiny" and info["model_loaded"] is True
    assert "64x64" in info["sizes"]
    assert info["fps"] == 8 and info["default_steps"] == 4 and info["default_guidance"] == 4.0
    assert 0 in info["seconds"]


def test_a_job_runs_to_completion_with_its_three_assets(service):
    job = service.submit(width=112, height=64, seconds=2, steps=3)
    done = service.wait_final(job.id)
    assert done.status == "completed", done.error
    assert done.progress == 100 and done.error is None
    assert done.started_at is not None and done.completed_at is not None
    assert done.expires_at == done.completed_at + ASSET_TTL
    assert set(done.assets) == {"video", "thumbnail", "spritesheet"}

    video = service.storage.get(done.assets["video"]["key"])
    assert done.assets["video"]["key"] == f"{job.id}/video.mp4"
    assert done.assets["video"]["content_type"] == "video/mp4"
    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 8
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 17 and frames[0].shape == (64, 112, 3)

    thumbnail = Image.open(io.BytesIO(service.storage.get(f"{job.id}/thumbnail.webp")))
    assert thumbnail.format == "WEBP" and thumbnail.size == (112, 64)
    sheet = Image.open(io.BytesIO(service.storage.get(f"{job.id}/spritesheet.jpg")))
    assert sheet.format == "JPEG" and sheet.size[0] % 112 == 0 and sheet.size[1] % 64 == 0


def test_a_still_image_is_a_one_frame_video(service):
    job = service.submit(seconds=0, steps=2)
    done = service.wait_final(job.id)
    assert done.status == "completed", done.error
    with av.open(io.BytesIO(service.storage.get(f"{job.id}/video.mp4"))) as container:
        assert len(list(container.decode(video=0))) == 1


def test_progress_is_published_at_every_step(service):
    job = service.submit(steps=5)
    assert service.wait_final(job.id).status == "completed"
    events = service.store.events(job.id)
    types = [event_type for _, event_type, _ in events]
    assert types == ["video.queued", "video.started"] + ["video.progress"] * 5 + ["video.completed"]
    progress = [snapshot.progress for _, event_type, snapshot in events if event_type == "video.progress"]
    assert progress == [20, 40, 60, 80, 99]
    assert events[-1][2].progress == 100


def test_same_request_and_seed_give_the_same_video(service):
    first = service.submit(seed=11, steps=2)
    second = service.submit(seed=11, steps=2)
    other_seed = service.submit(seed=12, steps=2)
    videos = {}
    for job in (first, second, other_seed):
        assert service.wait_final(job.id).status == "completed"
        with av.open(io.BytesIO(service.storage.get(f"{job.id}/video.mp4"))) as container:
            videos[job.id] = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert np.array_equal(videos[first.id], videos[second.id])
    assert not np.array_equal(videos[first.id], videos[other_seed.id])


def test_cancel_of_a_running_job_stops_within_a_step(service):
    job = service.submit(steps=100)
    service.wait_progress(job.id)
    assert service.store.request_cancel(job.id) == "requested"
    # Every event after this one was written after the flag was set.
    mark = service.store.events(job.id)[-1][0]
    done = service.wait_final(job.id)
    assert done.status == "cancelled"
    later = [event_type for event_id, event_type, _ in service.store.events(job.id, after=mark)]
    # At most the step that was running when the flag was set reports; then the job stops.
    assert later.count("video.progress") <= 1, later
    assert later[-1] == "video.cancelled"
    assert done.progress < 99
    assert not service.storage.exists(f"{job.id}/video.mp4")


def test_a_job_cancelled_while_queued_never_runs(service):
    job = Job(id=new_id("video"), tenant="acme", model="tiny", prompt="a blue square", width=64, height=64,
              seconds=1, fps=8, frames=9, seed=1, steps=2, guidance=4.0, created_at=int(time.time()))
    service.store.create(job)
    assert service.store.request_cancel(job.id) == "cancelled"
    send_generate(service.celery, job.id)
    # The worker takes tasks in order: once a later job is done, the cancelled one was seen.
    later = service.submit(steps=1)
    assert service.wait_final(later.id).status == "completed"
    assert service.event_types(job.id) == ["video.queued", "video.cancelled"]
    assert service.store.get(job.id).started_at is None
    assert not service.storage.exists(f"{job.id}/video.mp4")


def test_a_redelivered_completed_job_does_nothing(service):
    job = service.submit(steps=2)
    done = service.wait_final(job.id)
    assert done.status == "completed"
    video_path = service.storage.root / job.id / "video.mp4"
    before = (video_path.stat().st_mtime_ns, service.storage.stat(f"{job.id}/video.mp4").etag,
              len(service.store.events(job.id)))

    send_generate(service.celery, job.id)  # the same task again, as Redis redelivers it
    later = service.submit(steps=1)
    assert service.wait_final(later.id).status == "completed"

    after = service.store.get(job.id)
    assert after.status == "completed" and after.completed_at == done.completed_at and after.attempts == 1
    assert (video_path.stat().st_mtime_ns, service.storage.stat(f"{job.id}/video.mp4").etag,
            len(service.store.events(job.id))) == before


def test_a_job_whose_worker_died_starts_over_and_overwrites(service):
    job = Job(id=new_id("video"), tenant="acme", model="tiny", prompt="a green triangle", width=64, height=64,
              seconds=1, fps=8, frames=9, seed=3, steps=2, guidance=4.0, created_at=int(time.time()))
    service.store.create(job)
    # What a worker that died half way leaves behind: the job in progress, a stale file.
    assert service.store.start(job.id, "worker-that-died")
    service.store.set_progress(job.id, 50)
    service.storage.put(f"{job.id}/video.mp4", b"half-written by the dead worker", "video/mp4")
    send_generate(service.celery, job.id)

    done = service.wait_final(job.id)
    assert done.status == "completed", done.error
    assert done.attempts == 2 and done.worker_id != "worker-that-died"
    with av.open(io.BytesIO(service.storage.get(f"{job.id}/video.mp4"))) as container:
        assert len(list(container.decode(video=0))) == 9
    files = sorted(p.name for p in (service.storage.root / job.id).iterdir() if not p.name.endswith(".meta.json"))
    assert files == ["spritesheet.jpg", "thumbnail.webp", "video.mp4"]


def test_a_job_that_keeps_killing_its_worker_is_failed(service):
    job = Job(id=new_id("video"), tenant="acme", model="tiny", prompt="a yellow circle", width=64, height=64,
              seconds=1, fps=8, frames=9, seed=3, steps=2, guidance=4.0, created_at=int(time.time()))
    service.store.create(job)
    for attempt in range(3):  # three workers took it and died
        assert service.store.start(job.id, f"dead-worker-{attempt}")
    send_generate(service.celery, job.id)
    done = service.wait_final(job.id)
    assert done.status == "failed"
    assert done.error["code"] == "worker_lost" and "3 times" in done.error["message"]


def test_a_job_the_model_cannot_make_fails_with_the_reason(service):
    # The tiny model takes sides up to 128; the API's own limit is wider.
    job = service.submit(width=256, height=64, steps=1)
    done = service.wait_final(job.id)
    assert done.status == "failed"
    assert done.error["code"] == "invalid_request" and "width" in done.error["message"]
    assert service.event_types(job.id)[-1] == "video.failed"


def test_a_malformed_task_is_dropped_and_the_worker_goes_on(service):
    service.celery.send_task("worker.tasks.generate_video", args=["not-a-video-id"], queue="generate")
    later = service.submit(steps=1)
    assert service.wait_final(later.id).status == "completed"
    assert service.worker.process.poll() is None


def test_sweep_task_deletes_expired_assets(service):
    job = Job(id=new_id("video"), tenant="acme", model="tiny", prompt="an old video", width=64, height=64,
              seconds=1, fps=8, frames=9, seed=3, steps=2, guidance=4.0, created_at=int(time.time()) - 10 * ASSET_TTL)
    service.store.create(job)
    service.store.start(job.id, "some-worker")
    stored = {"video": service.storage.put(f"{job.id}/video.mp4", b"old", "video/mp4").as_asset()}
    assert service.store.complete(job.id, stored, now=time.time() - 2 * ASSET_TTL)
    fresh = service.submit(steps=1)
    assert service.wait_final(fresh.id).status == "completed"

    service.celery.send_task(SWEEP_TASK, queue="maintenance")
    # The sweep deletes the files, then forgets them in the record.
    wait_until(lambda: service.store.get(job.id).assets == {}, what="the sweep")
    assert not service.storage.exists(f"{job.id}/video.mp4")
    # What has not expired stays.
    assert service.storage.exists(f"{fresh.id}/video.mp4")
    assert service.store.get(fresh.id).assets["video"]["key"] == f"{fresh.id}/video.mp4"
