"""The FastAPI application: `create_app()` builds it from one Settings object."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

import redis
import redis.asyncio
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from app import auth, webhooks
from app.api import health, metrics, models, videos
from app.api.errors import BodyTooLarge, install_error_handlers
from app.jobs import JobStore
from app.metrics import make_registry
from app.queue import make_celery
from app.settings import Settings, get_settings
from app.storage import make_storage

log = logging.getLogger("reel.api")
UI_DIR = Path(__file__).parent / "ui"


class BodyLimit:
    """413 for bodies over the limit: by Content-Length up front, and by counting while streaming."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            too_large = not declared.isdigit() or int(declared) > self.max_bytes
            if too_large:
                status = 413 if declared.isdigit() else 400
                message = (f"the request body is larger than {self.max_bytes} bytes" if status == 413
                           else "invalid Content-Length header")
                body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                             "code": "request_too_large" if status == 413 else "invalid_header"}}).encode()
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                        (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(f"the request body is larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)


async def _background(app: FastAPI) -> None:
    """Registers the configured key once the store answers, then sends due webhook retries."""
    settings: Settings = app.state.settings
    store: JobStore = app.state.store
    key_registered = settings.api_key is None
    while True:
        try:
            if not key_registered:
                await run_in_threadpool(auth.ensure_key, store, settings.default_tenant, settings.api_key)
                key_registered = True
            await run_in_threadpool(webhooks.enqueue_due_retries, store, app.state.celery)
        except Exception as exc:  # the store or broker is down: try again next round
            log.warning("background round failed: %s", exc)
        await asyncio.sleep(2.0)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=settings.redis_socket_timeout,
                                  socket_connect_timeout=settings.redis_connect_timeout, health_check_interval=30)
    # Blocking stream reads (SSE, Prefer: wait) wait up to 10 s, so this client's timeout is longer.
    async_client = redis.asyncio.Redis.from_url(settings.redis_url, socket_timeout=settings.redis_socket_timeout + 20,
                                                socket_connect_timeout=settings.redis_connect_timeout)
    app.state.store = JobStore(client, settings, async_client)
    app.state.storage = make_storage(settings)
    app.state.celery = make_celery(settings)
    app.state.metrics_registry = make_registry(app.state.store)
    if settings.api_key:
        try:
            auth.ensure_key(app.state.store, settings.default_tenant, settings.api_key)
        except redis.exceptions.RedisError as exc:
            log.warning("store unreachable at start-up (%s); the API key will be registered when it answers", exc)
    background = asyncio.create_task(_background(app))
    try:
        yield
    finally:
        background.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await background
        await async_client.aclose()
        client.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="Reel",
        version="0.1.0",
        summary="Self-hosted text-to-video, compatible with OpenAI's /v1/videos API.",
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=app.state.settings.max_body_bytes)
    for router in (videos.router, models.router, health.router, metrics.router):
        app.include_router(router)
    if (UI_DIR / "index.html").is_file():
        app.mount("/", StaticFiles(directory=UI_DIR, html=True), name="ui")
    return app
