"""Standard Webhooks signing, the retry policy and target checks, with a real HTTP receiver."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app import webhooks
from app.auth import create_key
from app.queue import make_celery
from api_harness import assert_error, create
from waiting import wait_until


class Receiver:
    """An HTTP server that records each POST and answers with the next queued status (default 200)."""

    def __init__(self):
        self.requests: list[tuple[dict, bytes]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def private_api(make_api):
    return make_api(webhook_allow_private=True)


def broker_messages(api, queue: str) -> list[dict]:
    messages = []
    for raw in api.redis.lrange(queue, 0, -1)[::-1]:  # kombu LPUSHes: oldest last
        args, _, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
        messages.append(args[0])
    return messages


def test_job_webhook_is_queued_signed_and_verifiable(private_api, receiver):
    api = private_api
    key, _, secret = create_key(api.store, "acme")
    assert secret.startswith("whsec_")
    with api.client(key) as http:
        video = create(http, webhook_url=receiver.url, webhook_events=["video.queued", "video.completed"]).json()
    [message] = broker_messages(api, "webhooks")
    assert message["url"] == receiver.url and message["tenant"] == "acme" and message["attempt"] == 1
    event = message["event"]
    assert event["id"].startswith("evt_") and event["object"] == "event" and event["type"] == "video.queued"
    assert event["data"]["id"] == video["id"]

    outcome = webhooks.deliver(api.store, make_celery(api.settings), api.settings, message)
    assert outcome.delivered and outcome.status_code == 200
    [(headers, body)] = receiver.requests
    verified = Webhook(secret).verify(body, headers)
    assert verified == event
    assert headers["webhook-id"] == event["id"]
    assert headers["webhook-signature"].startswith("v1,")
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another secret").decode()).verify(body, headers)
    assert api.store.counter("webhook_deliveries") == {"delivered": 1}


def test_unsubscribed_events_are_not_sent(private_api, receiver):
    api = private_api
    with api.client(api.new_key("acme")) as http:
        video = create(http, webhook_url=receiver.url).json()  # default: final events only
        assert broker_messages(api, "webhooks") == []
        http.post(f"/v1/videos/{video['id']}/cancel")
    [message] = broker_messages(api, "webhooks")
    assert message["event"]["type"] == "video.cancelled"
    assert message["event"]["data"]["status"] == "cancelled"


def test_failed_attempts_are_retried_on_schedule_with_a_stable_id(private_api, receiver):
    api = private_api
    _, _, secret = create_key(api.store, "acme")
    celery = make_celery(api.settings)
    with api.client(api.new_key("acme")) as http:
        job = api.store.get(create(http, webhook_url=receiver.url).json()["id"])
    message = {"event": webhooks.build_event(job, "video.completed"), "tenant": "acme", "url": receiver.url, "attempt": 1}
    receiver.statuses = [500, 503]

    first = webhooks.deliver(api.store, celery, api.settings, message)
    assert (first.delivered, first.retry_in, first.gave_up) == (False, 5, False)
    [(scheduled, due_at)] = api.store.scheduled_webhooks()
    assert scheduled["attempt"] == 2 and scheduled["event"] == message["event"]
    assert due_at > time.time()
    assert api.store.pop_due_webhooks(now=time.time() - 1) == []  # not due yet

    [retry] = api.store.pop_due_webhooks(now=due_at + 1)
    second = webhooks.deliver(api.store, celery, api.settings, retry)
    assert second.retry_in == 300
    [(third_message, _)] = api.store.scheduled_webhooks()
    api.store.pop_due_webhooks(now=time.time() + 400)
    third = webhooks.deliver(api.store, celery, api.settings, third_message)
    assert third.delivered
    ids = {headers["webhook-id"] for headers, _ in receiver.requests}
    assert ids == {message["event"]["id"]} and len(receiver.requests) == 3
    for headers, body in receiver.requests:
        Webhook(secret).verify(body, headers)
    assert api.store.counter("webhook_deliveries") == {"retry": 2, "delivered": 1}


def test_retry_schedule_410_and_giving_up(private_api, receiver):
    settings = private_api.settings
    event = {"id": "evt_test", "object": "event", "type": "video.completed", "created_at": 0, "data": {}}
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    delays = []
    for attempt in range(1, 8):
        receiver.statuses = [500]
        outcome = webhooks.attempt_delivery(event, receiver.url, secret, attempt, settings)
        delays.append(outcome.retry_in)
    assert delays == [5, 300, 1800, 7200, 18000, 36000, None]
    assert outcome.gave_up and outcome.reason == "exhausted"
    receiver.statuses = [410]
    gone = webhooks.attempt_delivery(event, receiver.url, secret, 1, settings)
    assert gone.gave_up and gone.retry_in is None and gone.reason == "gone"
    refused = webhooks.attempt_delivery(event, "http://127.0.0.1:1/hook", secret, 1, settings)
    assert refused.retry_in == 5 and refused.status_code is None  # no answer: retried


def test_due_retries_are_sent_to_the_webhooks_queue_by_the_api(private_api):
    api = private_api
    message = {"event": {"id": "evt_x", "type": "video.completed"}, "tenant": "acme", "url": "http://x/", "attempt": 3}
    api.store.schedule_webhook(message, time.time() - 1)
    # the API's background round runs every 2 s
    wait_until(lambda: api.redis.llen("webhooks"), interval=0.1, what="the due retry on the webhooks queue")
    assert broker_messages(api, "webhooks") == [message]
    assert api.store.scheduled_webhooks() == []


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://localhost:8000/hook", "http://10.1.2.3/", "http://192.168.0.10/",
    "http://172.16.5.5/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://0.0.0.0/",
    "http://metadata.google.internal/", "http://[::ffff:127.0.0.1]/", "http://[fd00:ec2::254]/",
])
def test_private_targets_are_refused(url):
    with pytest.raises(webhooks.UnsafeWebhookTarget):
        webhooks.check_target(url, allow_private=False)


def test_public_and_allowed_targets_pass():
    webhooks.check_target("https://93.184.216.34/hook", allow_private=False)
    webhooks.check_target("http://127.0.0.1:9/hook", allow_private=True)
    with pytest.raises(webhooks.UnsafeWebhookTarget):
        webhooks.check_target("ftp://93.184.216.34/", allow_private=True)


def test_create_refuses_a_private_webhook_url(client):
    response = create(client, webhook_url="http://127.0.0.1:9000/hook")
    assert assert_error(response, 400, "webhook_url")["code"] == "invalid_webhook_url"
    assert_error(create(client, webhook_url="http://no-such-host.invalid/hook"), 400, "webhook_url")
