"""The official `openai` package against the real service: uvicorn + a `reel worker` (tiny model) + Valkey."""

from __future__ import annotations

import http.server
import io
import json
import secrets
import threading

import av
import openai
import pytest
import redis
from PIL import Image

from app.jobs import JobStore
from app.settings import Settings

from waiting import wait_until

# The SDK marks its video methods deprecated (a notice about OpenAI's hosted service).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class WebhookReceiver:
    """A plain HTTP server on loopback that keeps every request it gets; it answers `statuses`
    in turn (the last one from then on)."""

    def __init__(self, statuses=(200,)):
        received = self.received = []
        answers = list(statuses)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append((dict(self.headers.items()), body))
                self.send_response(answers.pop(0) if len(answers) > 1 else answers[0])
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stack(module_redis_url, start_worker, start_api, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    key = "reel_sk_" + secrets.token_urlsafe(24)
    settings = Settings(redis_url=module_redis_url, data_dir=data_dir, model="tiny", api_key=key, default_steps=3,
                        webhook_allow_private=True, poll_after_ms=100)
    api = start_api(settings)
    store = JobStore(redis.Redis.from_url(module_redis_url), settings)
    worker = start_worker(module_redis_url, data_dir, model="tiny", webhook_allow_private=1)
    worker.wait_ready(store)
    api.store, api.key, api.worker = store, key, worker
    api.webhook_secret = wait_until(lambda: store.tenant_webhook_secret(settings.default_tenant), 30,
                                    what="the default tenant")
    yield api
    store.redis.close()


@pytest.fixture(scope="module")
def client(stack):
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.key, max_retries=0, timeout=60) as sdk:
        yield sdk


def test_create_poll_and_download_every_variant(client):
    created = client.videos.create(prompt="a red circle moving right on a white background", size="112x64",
                                   seconds="1", extra_body={"seed": 5, "steps": 2})
    # An idle worker may have taken the job before the answer was written.
    assert created.status in ("queued", "in_progress") and created.id.startswith("video_")
    assert created.size == "112x64" and created.seconds == "1"

    video = client.videos.poll(created.id)
    assert video.status == "completed", video.error
    assert video.progress == 100 and video.expires_at is not None and video.model == "tiny"
    assert client.videos.retrieve(created.id).status == "completed"

    mp4 = client.videos.download_content(created.id).read()
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape == (64, 112, 3)
    assert mp4.find(b"moov") < mp4.find(b"mdat")  # faststart

    assert client.videos.download_content(created.id, variant="video").read() == mp4
    thumbnail = Image.open(io.BytesIO(client.videos.download_content(created.id, variant="thumbnail").read()))
    assert thumbnail.format == "WEBP" and thumbnail.size == (112, 64)
    sheet = Image.open(io.BytesIO(client.videos.download_content(created.id, variant="spritesheet").read()))
    assert sheet.format == "JPEG" and sheet.size[0] % 112 == 0 and sheet.size[1] % 64 == 0


def test_create_and_poll_a_still_image(client):
    video = client.videos.create_and_poll(prompt="a blue square", seconds="0", size="64x64")
    assert video.status == "completed", video.error
    # No steps or guidance asked: the worker's model defaults (tiny: 4 steps), not the settings' 3.
    defaults = next(m for m in client.models.list().data if m.id == "tiny")
    assert (video.steps, video.guidance) == (defaults.default_steps, defaults.default_guidance) == (4, 4.0)
    with av.open(io.BytesIO(client.videos.download_content(video.id).read())) as container:
        assert len(list(container.decode(video=0))) == 1


def test_list_pages_newest_first(client):
    ids = [client.videos.create(prompt=f"a green triangle number {i}", seconds="0", extra_body={"steps": 1}).id
           for i in range(3)]
    page = client.videos.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    assert [v.id for v in page.data] == ids[::-1][:2]
    following = page.get_next_page()
    assert following.data[0].id == ids[0]
    every = [v.id for v in client.videos.list(limit=2)]  # auto-pagination over all pages
    assert every[:3] == ids[::-1] and len(every) == len(set(every))
    asc = [v.id for v in client.videos.list(limit=100, order="asc")]
    assert asc == sorted(asc) and asc[-3:] == ids
    for video_id in ids:
        client.videos.poll(video_id)


def test_delete_removes_the_job_and_its_files(client, stack):
    video = client.videos.create_and_poll(prompt="a yellow circle", seconds="0")
    assert video.status == "completed"
    assets_dir = stack.settings.assets_dir / video.id
    assert (assets_dir / "video.mp4").is_file()

    deleted = client.videos.delete(video.id)
    assert deleted.deleted is True and deleted.id == video.id
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)
    assert not (assets_dir / "video.mp4").exists()


def test_remix_keeps_size_duration_and_seed(client):
    source = client.videos.create_and_poll(prompt="a red square moving up", size="64x112", seconds="1",
                                           extra_body={"seed": 42, "steps": 2})
    assert source.status == "completed"
    remix = client.videos.remix(source.id, prompt="a blue square moving up")
    assert remix.remixed_from_video_id == source.id and remix.id != source.id
    done = client.videos.poll(remix.id)
    assert done.status == "completed" and done.prompt == "a blue square moving up"
    assert (done.size, done.seconds) == ("64x112", "1")
    raw = client.videos.with_raw_response.retrieve(remix.id).http_response.json()
    assert raw["seed"] == 42
    with av.open(io.BytesIO(client.videos.download_content(remix.id).read())) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape == (112, 64, 3)


def test_webhook_is_signed_and_unwraps(client, stack):
    receiver = WebhookReceiver()
    try:
        video = client.videos.create(prompt="a green circle bouncing", seconds="0",
                                     extra_body={"webhook_url": receiver.url,
                                                 "webhook_events": ["video.started", "video.completed"]})
        wait_until(lambda: any(json.loads(body)["type"] == "video.completed" for _, body in receiver.received),
                   what="the video.completed webhook")
    finally:
        receiver.stop()
    by_type = {json.loads(body)["type"]: (headers, body) for headers, body in receiver.received}
    assert set(by_type) == {"video.started", "video.completed"}

    headers, body = by_type["video.completed"]
    event = client.webhooks.unwrap(body, headers, secret=stack.webhook_secret)
    assert event.type == "video.completed"
    assert event.data.id == video.id
    payload = json.loads(body)
    assert payload["data"]["status"] == "completed" and payload["data"]["progress"] == 100
    assert headers["webhook-id"] == payload["id"] and payload["id"].startswith("evt_")

    tampered = body.replace(b'"completed"', b'"failed"', 1)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(tampered, headers, secret=stack.webhook_secret)


def test_cancel_a_queued_and_a_running_job(client, stack):
    running = client.videos.create(prompt="a long one", extra_body={"steps": 100})
    queued = client.videos.create(prompt="waiting behind it", extra_body={"steps": 2})
    wait_until(lambda: client.videos.retrieve(running.id).progress > 0, what="the running job to make progress")

    http = client.with_options(max_retries=0)
    cancelled = http.post(f"/videos/{queued.id}/cancel", cast_to=openai.types.Video)
    assert cancelled.status == "cancelled"
    http.post(f"/videos/{running.id}/cancel", cast_to=openai.types.Video)

    done = wait_until(lambda: (v := client.videos.retrieve(running.id)).status not in ("queued", "in_progress") and v,
                      what="the running job to stop")
    assert done.status == "cancelled" and done.progress < 100
    assert client.videos.retrieve(queued.id).status == "cancelled"
    assert stack.store.get(queued.id).started_at is None
    for video_id in (running.id, queued.id):
        with pytest.raises(openai.NotFoundError):
            client.videos.download_content(video_id)


def test_a_failed_webhook_is_retried_with_the_same_id(client, stack):
    receiver = WebhookReceiver(statuses=(503, 200))
    try:
        video = client.videos.create(prompt="a red square", seconds="0", extra_body={"webhook_url": receiver.url})
        # The first attempt gets 503; the retry is due 5 s later (the first step of the schedule).
        wait_until(lambda: len(receiver.received) >= 2, what="the retried webhook")
    finally:
        receiver.stop()
    (first_headers, first_body), (second_headers, second_body) = receiver.received[:2]
    assert first_headers["webhook-id"] == second_headers["webhook-id"]
    assert json.loads(first_body) == json.loads(second_body)  # the same event (each attempt is signed anew)
    event = client.webhooks.unwrap(second_body, second_headers, secret=stack.webhook_secret)
    assert event.type == "video.completed" and event.data.id == video.id
