"""Signed webhooks (Standard Webhooks) and their delivery policy.

The worker's task is thin and calls `deliver`:

    @celery.task(name="worker.tasks.deliver_webhook")
    def deliver_webhook(message: dict) -> None:
        webhooks.deliver(store, celery, settings, message)

`message` is what `enqueue_webhook` sends: {"event": <event body dict>, "tenant": str,
"url": str, "attempt": int (1 for the first try)}. The event body, and so the
`webhook-id` header (the event's id), stays the same across retries.

Retries: after a failed attempt n (any non-2xx answer, a timeout, a refused
connection) the next one is due RETRY_DELAYS[n - 1] seconds later (5 s, 5 min,
30 min, 2 h, 5 h, 10 h); after the last the delivery is given up. 410 Gone stops at
once. A retry is not held by a Celery ETA (Redis would redeliver tasks held longer
than its visibility timeout): it waits in JobStore's due set until
`enqueue_due_retries` sends it again; the API runs that every few seconds.

Which events: the job's `webhook_events`; with a webhook_url and no list, the final
ones (video.completed, video.failed, video.cancelled).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from app.jobs import Job, new_id
from app.queue import send_webhook
from app.schemas import Video

log = logging.getLogger("reel.webhooks")

RETRY_DELAYS = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600)
# Cloud metadata endpoints that are not covered by the link-local / private checks.
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}


class UnsafeWebhookTarget(ValueError):
    """The URL points at this machine or a private network (and that is not allowed)."""


def _address_is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified)


def check_target(url: str, allow_private: bool = False) -> None:
    """Refuse URLs that are not http(s) or that resolve to loopback, private, link-local
    or metadata addresses (every address the name resolves to is checked)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeWebhookTarget("webhook_url must be an absolute http:// or https:// URL")
    if allow_private:
        return
    host = parts.hostname.rstrip(".").lower()
    if host in _METADATA_HOSTS or host == "localhost" or host.endswith(".localhost"):
        raise UnsafeWebhookTarget(f"webhook_url host {host!r} is not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeWebhookTarget("webhook_url has an invalid port") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeWebhookTarget(f"webhook_url host {host!r} does not resolve ({exc})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if _address_is_private(address):
            raise UnsafeWebhookTarget(
                f"webhook_url resolves to {address}, a loopback, private or link-local address")


def subscribed(job: Job, event_type: str) -> bool:
    return bool(job.webhook_url) and event_type in job.webhook_events


def build_event(job: Job, event_type: str, queue_position: int | None = None, now: float | None = None) -> dict:
    """The webhook body: {"id": "evt_...", "object": "event", "type", "created_at", "data": video}."""
    return {
        "id": new_id("evt"),
        "object": "event",
        "type": event_type,
        "created_at": int(now if now is not None else time.time()),
        "data": Video.from_job(job, queue_position).model_dump(mode="json"),
    }


def enqueue_webhook(celery, settings, job: Job, event_type: str, queue_position: int | None = None) -> dict | None:
    """Send the event to the `webhooks` queue if the job subscribed to it; returns the message."""
    if not subscribed(job, event_type):
        return None
    message = {"event": build_event(job, event_type, queue_position), "tenant": job.tenant,
               "url": job.webhook_url, "attempt": 1}
    send_webhook(celery, message)
    return message


@dataclass(frozen=True)
class DeliveryOutcome:
    delivered: bool
    status_code: int | None  # the receiver's answer, None when there was none
    retry_in: float | None  # seconds until the next attempt, None when there is none
    gave_up: bool
    reason: str  # "delivered", "retry", "gone" (410), "exhausted", "refused" (unsafe target), "no_secret"


def sign(secret: str, event: dict, now: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The body bytes and the Standard Webhooks headers for one attempt."""
    body = json.dumps(event, separators=(",", ":")).encode()
    timestamp = datetime.fromtimestamp(int(now if now is not None else time.time()), tz=timezone.utc)
    signature = Webhook(secret).sign(event["id"], timestamp, body.decode())
    headers = {
        "content-type": "application/json",
        "user-agent": "reel-webhooks/1",
        "webhook-id": event["id"],
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }
    return body, headers


def _next(attempt: int, status_code: int | None) -> DeliveryOutcome:
    if attempt <= len(RETRY_DELAYS):
        return DeliveryOutcome(False, status_code, RETRY_DELAYS[attempt - 1], False, "retry")
    return DeliveryOutcome(False, status_code, None, True, "exhausted")


def attempt_delivery(event: dict, url: str, secret: str, attempt: int, settings,
                     client: httpx.Client | None = None) -> DeliveryOutcome:
    """POST the signed event once; say whether and when to try again."""
    try:
        check_target(url, settings.webhook_allow_private)
    except UnsafeWebhookTarget as exc:
        log.warning("webhook %s to %s refused: %s", event["id"], url, exc)
        return DeliveryOutcome(False, None, None, True, "refused")
    body, headers = sign(secret, event)
    own_client = client is None
    client = client or httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False)
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        log.info("webhook %s attempt %d to %s failed: %s", event["id"], attempt, url, exc)
        return _next(attempt, None)
    finally:
        if own_client:
            client.close()
    if 200 <= response.status_code < 300:
        return DeliveryOutcome(True, response.status_code, None, False, "delivered")
    if response.status_code == 410:
        return DeliveryOutcome(False, 410, None, True, "gone")
    return _next(attempt, response.status_code)


def deliver(store, celery, settings, message: dict, client: httpx.Client | None = None) -> DeliveryOutcome:
    """One attempt of a queued message: sign and POST, count the outcome, schedule the retry."""
    secret = store.tenant_webhook_secret(message["tenant"])
    if secret is None:
        outcome = DeliveryOutcome(False, None, None, True, "no_secret")
    else:
        outcome = attempt_delivery(message["event"], message["url"], secret, message["attempt"], settings, client)
    store.increment("webhook_deliveries", outcome.reason)
    if outcome.retry_in is not None:
        store.schedule_webhook({**message, "attempt": message["attempt"] + 1}, time.time() + outcome.retry_in)
    return outcome


def enqueue_due_retries(store, celery, now: float | None = None) -> int:
    """Send the retries that are due to the `webhooks` queue; returns how many."""
    due = store.pop_due_webhooks(now)
    for index, message in enumerate(due):
        try:
            send_webhook(celery, message)
        except Exception:
            # The broker is down: put the rest back, to be tried again on the next round.
            for pending in due[index:]:
                store.schedule_webhook(pending, time.time() + 5)
            raise
    return len(due)
