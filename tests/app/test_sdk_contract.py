"""The official openai SDK against the API (jobs completed through JobStore, no worker)."""

from __future__ import annotations

import threading

import openai
import pytest
from openai import OpenAI

from app import webhooks
from app.auth import create_key
from api_harness import complete_job
from waiting import wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def sdk(api):
    key, _, secret = create_key(api.store, "acme")
    return OpenAI(api_key=key, base_url=f"{api.url}/v1", max_retries=0, webhook_secret=secret)


def test_sdk_create_retrieve_list_download_remix_delete(api, sdk):
    video = sdk.videos.create(prompt="a green triangle bouncing", size="720x1280", seconds="4")  # multipart
    assert video.status == "queued" and video.size == "64x112" and video.seconds == "4"
    assert api.store.get(video.id).prompt == "a green triangle bouncing"

    payloads = complete_job(api, video.id)
    done = sdk.videos.retrieve(video.id)
    assert done.status == "completed" and done.progress == 100 and done.expires_at

    assert sdk.videos.download_content(video.id).content == payloads["video"]
    assert sdk.videos.download_content(video.id, variant="thumbnail").content == payloads["thumbnail"]
    assert sdk.videos.download_content(video.id, variant="spritesheet").content == payloads["spritesheet"]

    remix = sdk.videos.remix(video.id, prompt="a green triangle, now still")
    assert remix.remixed_from_video_id == video.id and remix.status == "queued"

    more = [sdk.videos.create(prompt=f"clip {i}").id for i in range(3)]
    listed = [v.id for v in sdk.videos.list(limit=2)]  # auto-pagination follows after=last_id
    assert listed == more[::-1] + [remix.id, video.id]
    assert [v.id for v in sdk.videos.list(order="asc", limit=10)] == [video.id, remix.id] + more

    deleted = sdk.videos.delete(video.id)
    assert deleted.id == video.id and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve(video.id)


def test_sdk_errors_carry_param_and_code(sdk):
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.videos.create(prompt="p", seconds="12")
    assert bad.value.param == "seconds" and bad.value.code == "invalid_value"
    bad_key = OpenAI(api_key="reel_sk_wrong", base_url=str(sdk.base_url), max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.videos.list()


def test_sdk_create_and_poll_honours_poll_after(api, sdk):
    def act_as_worker():
        jobs = wait_until(lambda: api.store.list("acme", limit=1)[0], what="the job")
        complete_job(api, jobs[0].id)

    worker = threading.Thread(target=act_as_worker)
    worker.start()
    video = sdk.videos.create_and_poll(prompt="a yellow circle growing")
    worker.join()
    assert video.status == "completed"


def test_sdk_unwraps_our_webhooks(api, sdk):
    event = {"id": "evt_01abc", "object": "event", "type": "video.completed", "created_at": 1, "data": {"id": "video_x"}}
    body, headers = webhooks.sign(sdk.webhook_secret, event)
    unwrapped = sdk.webhooks.unwrap(body, headers)
    assert unwrapped.type == "video.completed"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(body.replace(b"video_x", b"video_y"), headers)
