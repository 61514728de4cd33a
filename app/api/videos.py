"""/v1/videos: create, list, retrieve, events (SSE), content, cancel, delete, remix."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app import webhooks
from app.api.deps import CeleryDep, SettingsDep, StorageDep, StoreDep
from app.api.errors import APIError
from app.auth import Tenant
from app.jobs import Job, JobStore, QueueFull, new_id
from app.queue import send_generate
from app.schemas import (DEFAULT_WEBHOOK_EVENTS, OPENAI_MODEL_NAMES, ErrorBody, Video, VideoCreateRequest,
                         VideoDeleted, VideoList, VideoRemixRequest, parse_size)

log = logging.getLogger("reel.api")
router = APIRouter(prefix="/v1/videos", tags=["videos"])

VARIANTS = {"video": ("video/mp4", "mp4"), "thumbnail": ("image/webp", "webp"), "spritesheet": ("image/jpeg", "jpg")}
_ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 409, 413, 429, 503)}
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:\s*(?:[,;]|$))")


def _json_schema_body(model) -> dict:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"required": True, "content": {"application/json": {"schema": schema},
                                          "multipart/form-data": {"schema": schema}}}


def _form_to_dict(form) -> dict:
    """A multipart/urlencoded form as the JSON body it stands for: `metadata[key]=v` and
    `webhook_events[]=e` (how the openai SDK sends nested values) become an object and a list."""
    data: dict = {}
    for name in form.keys():
        values = form.getlist(name)
        if any(isinstance(value, UploadFile) for value in values):
            raise APIError(400, f"{name}: file uploads are not supported", param=name, code="unsupported_parameter")
        match = re.fullmatch(r"([A-Za-z_]+)\[([^\]]*)\]", name)
        field = match.group(1) if match else name
        kind = list if match and match.group(2) == "" else dict if match else str
        if field in data and not isinstance(data[field], kind):
            raise APIError(400, f"{field}: sent both as {kind.__name__} and as another kind of value", param=field)
        if kind is list:
            data.setdefault(field, []).extend(values)
        elif kind is dict:
            data.setdefault(field, {})[match.group(2)] = values[-1]
        elif name == "webhook_events" and len(values) > 1:
            data[field] = values
        else:
            data[field] = values[-1]
    return data


async def read_body(request: Request) -> dict:
    """The request body as a dict, from JSON, multipart/form-data or a urlencoded form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return _form_to_dict(await request.form())
    raw = await request.body()
    if content_type not in ("", "application/json") and not content_type.endswith("+json"):
        raise APIError(415, f"unsupported content type {content_type!r}: send application/json or multipart/form-data")
    try:
        data = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "the body is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    return data


def request_hash(request: VideoCreateRequest | dict) -> str:
    """What makes two requests 'the same' for an idempotency key: their validated parameters."""
    data = request if isinstance(request, dict) else request.model_dump(mode="json", exclude_none=True)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def served_models(store: JobStore, settings) -> dict[str, list[dict]]:
    """Model name -> the heartbeats of the workers serving it (the configured model is always listed)."""
    models: dict[str, list[dict]] = {settings.model: []}
    for worker in store.workers():
        models.setdefault(worker.get("model") or settings.model, []).append(worker)
    return models


def check_against_workers(workers: list[dict], width: int, height: int, seconds: int) -> None:
    """Narrower limits a model's workers report (e.g. the bundled model: sides up to 128, 0/1/2/4 s)."""
    max_sides = [w["max_side"] for w in workers if isinstance(w.get("max_side"), int)]
    if max_sides and max(width, height) > max(max_sides):
        raise APIError(400, f"size {width}x{height}: this model accepts sides up to {max(max_sides)}", param="size",
                       code="invalid_value")
    durations = {int(d) for w in workers for d in (w.get("seconds") or []) if isinstance(d, (int, float))}
    if durations and seconds not in durations:
        raise APIError(400, f"seconds: this model makes {', '.join(map(str, sorted(durations)))} s videos, not {seconds}",
                       param="seconds", code="invalid_value")


def model_default(workers: list[dict], key: str, fallback):
    """A default the model's workers report (its trained step count and guidance), else the setting."""
    reported = [w[key] for w in workers if isinstance(w.get(key), (int, float))]
    return reported[0] if reported else fallback


def _video(store: JobStore, job: Job) -> Video:
    return Video.from_job(job, store.queue_position(job.id) if job.status == "queued" else None)


def _headers(job: Job, settings) -> dict[str, str]:
    return {"openai-poll-after-ms": str(settings.poll_after_ms)} if not job.is_final else {}


def _owned_job(store: JobStore, tenant: str, video_id: str) -> Job:
    job = store.get(video_id) if len(video_id) <= 64 else None
    if job is None or job.tenant != tenant:
        raise APIError(404, f"no video with id {video_id!r}", param="video_id", code="not_found")
    return job


async def _wait_for_final(store: JobStore, job_id: str, seconds: float) -> None:
    """Hold until the job reaches a final status or `seconds` pass (Replicate's sync mode)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    last_event = "0"
    while True:
        job = await store.aget(job_id)
        remaining = deadline - loop.time()
        if job is None or job.is_final or remaining <= 0:
            return
        events = await store.wait_events(job_id, last_event, block_ms=max(1, int(min(remaining, 10) * 1000)))
        if events:
            last_event = events[-1][0]


def _prefer_wait(prefer: str | None, settings) -> int | None:
    match = _PREFER_WAIT.search(prefer or "")
    return min(int(match.group(1)), settings.max_prefer_wait_seconds) if match else None


async def _enqueue(job: Job, idempotency_key: str | None, body_hash: str, prefer: str | None,
                   store: JobStore, celery, settings) -> JSONResponse:
    """Store the job (queue limits and idempotency in one step), send its task, answer."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise APIError(400, "Idempotency-Key must be 1-255 characters", param="Idempotency-Key")
    try:
        created = await run_in_threadpool(store.create, job, idempotency_key, body_hash)
    except QueueFull as exc:
        retry_after = str(settings.queue_full_retry_after_seconds)
        limit = settings.max_queued if exc.scope == "overall" else settings.max_queued_per_tenant
        raise APIError(429, f"too many queued videos ({exc.scope} limit {limit}); retry later",
                       code="queue_full", headers={"Retry-After": retry_after}) from None
    headers: dict[str, str] = {}
    if not created.created:
        if not created.request_hash_matches:
            raise APIError(409, "this Idempotency-Key was used with different parameters",
                           param="Idempotency-Key", code="idempotency_key_reused")
        headers["Idempotent-Replayed"] = "true"
    else:
        try:
            await run_in_threadpool(send_generate, celery, job.id)
        except Exception:
            # Nothing will run the job: undo it, so a retry with the same key starts afresh.
            try:
                await run_in_threadpool(store.discard, job.id, idempotency_key)
            except Exception:
                log.exception("could not discard job %s after a failed send", job.id)
            raise
        try:
            await run_in_threadpool(webhooks.enqueue_webhook, celery, settings, job, "video.queued")
        except Exception:
            log.exception("could not enqueue the video.queued webhook of %s", job.id)
    wait = _prefer_wait(prefer, settings)
    if wait:
        await _wait_for_final(store, created.job.id, wait)
        headers["Preference-Applied"] = f"wait={wait}"
    current = await run_in_threadpool(store.get, created.job.id) or created.job
    video = await run_in_threadpool(_video, store, current)
    return JSONResponse(video.model_dump(mode="json"), headers={**headers, **_headers(current, settings)})


@router.post("", response_model=Video, responses=_ERRORS, openapi_extra={"requestBody": _json_schema_body(VideoCreateRequest)},
             summary="Create a video")
async def create_video(
    request: Request, tenant: Tenant, store: StoreDep, celery: CeleryDep, settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    prefer: Annotated[str | None, Header()] = None,
):
    data = await read_body(request)
    if "input_reference" in data:
        raise APIError(400, "input_reference is not supported by this deployment", param="input_reference",
                       code="unsupported_parameter")
    body = VideoCreateRequest.model_validate(data, context={"settings": settings})
    model = body.model or settings.model
    if model in OPENAI_MODEL_NAMES:
        model = settings.model
    models = await run_in_threadpool(served_models, store, settings)
    if model not in models:
        raise APIError(400, f"model {model!r} is not served here (GET /v1/models lists the models)", param="model",
                       code="model_not_found")
    if body.webhook_url:
        try:
            await run_in_threadpool(webhooks.check_target, body.webhook_url, settings.webhook_allow_private)
        except webhooks.UnsafeWebhookTarget as exc:
            raise APIError(400, str(exc), param="webhook_url", code="invalid_webhook_url") from None
    width, height = parse_size(body.size or settings.default_size, settings)
    seconds = body.seconds if body.seconds is not None else settings.default_seconds
    check_against_workers(models[model], width, height, seconds)
    job = Job(
        id=new_id("video"), tenant=tenant, model=model, prompt=body.prompt, negative_prompt=body.negative_prompt,
        width=width, height=height, seconds=seconds, fps=settings.fps, frames=1 + settings.fps * seconds,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        steps=body.steps if body.steps is not None else model_default(models[model], "default_steps",
                                                                      settings.default_steps),
        guidance=body.guidance if body.guidance is not None else model_default(models[model], "default_guidance",
                                                                               settings.default_guidance),
        created_at=int(time.time()), metadata=body.metadata or {}, webhook_url=body.webhook_url,
        webhook_events=list(body.webhook_events or (DEFAULT_WEBHOOK_EVENTS if body.webhook_url else [])),
    )
    return await _enqueue(job, idempotency_key, request_hash(body), prefer, store, celery, settings)


@router.get("", response_model=VideoList, responses=_ERRORS, summary="List videos, newest first")
def list_videos(
    tenant: Tenant, store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64, description="the last id of the previous page")] = None,
    order: Literal["asc", "desc"] = "desc",
    status: Literal["queued", "in_progress", "completed", "failed", "cancelled"] | None = None,
) -> VideoList:
    jobs, has_more = store.list(tenant, limit=limit, after=after or None, order=order, status=status)
    positions = store.queue_positions([j.id for j in jobs if j.status == "queued"])
    data = [Video.from_job(job, positions.get(job.id)) for job in jobs]
    return VideoList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                     has_more=has_more)


@router.get("/{video_id}", response_model=Video, responses=_ERRORS, summary="Retrieve a video")
def retrieve_video(video_id: str, tenant: Tenant, store: StoreDep, settings: SettingsDep, response: Response) -> Video:
    job = _owned_job(store, tenant, video_id)
    response.headers.update(_headers(job, settings))
    return _video(store, job)


def _sse(event_id: str, event_type: str, video: Video) -> str:
    return f"id: {event_id}\nevent: {event_type}\ndata: {video.model_dump_json()}\n\n"


@router.get("/{video_id}/events", responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}}},
            summary="Stream status and progress (Server-Sent Events)")
async def video_events(
    video_id: str, tenant: Tenant, store: StoreDep, request: Request,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
):
    """Each event is `event: <type>` (video.queued, video.started, video.progress, video.completed,
    video.failed, video.cancelled) with the video object as `data`. History is replayed first
    (from `Last-Event-ID` when reconnecting); the stream ends after a final status."""
    await run_in_threadpool(_owned_job, store, tenant, video_id)
    after = last_event_id if last_event_id and re.fullmatch(r"\d+-\d+", last_event_id) else "0"

    async def stream():
        nonlocal after
        history = await run_in_threadpool(store.events, video_id, after)
        while True:
            for event_id, event_type, job in history:
                after = event_id
                position = await run_in_threadpool(store.queue_position, job.id) if job.status == "queued" else None
                yield _sse(event_id, event_type, Video.from_job(job, position))
                if job.is_final:
                    return
            current = await store.aget(video_id)
            if current is None:
                return  # deleted
            if current.is_final and not history:
                # The history has expired (or was cut short): say how the job ended.
                yield _sse(after, f"video.{current.status}", Video.from_job(current))
                return
            if await request.is_disconnected():
                return
            history = await store.wait_events(video_id, after, block_ms=10000)
            if not history:
                yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as (start, end) inclusive; None to ignore the header; raises for 416."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return None  # multiple or malformed ranges: answer with the whole file (RFC 9110 allows it)
    first, last = match.group(1), match.group(2)
    if not first:
        length = int(last)
        if length == 0:
            raise APIError(416, "range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise APIError(416, "range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end


_CONTENT_RESPONSES = {
    **_ERRORS, 200: {"content": {"video/mp4": {}, "image/webp": {}, "image/jpeg": {}}}, 206: {"description": "a byte range"},
    302: {"description": "redirect to a presigned URL"}, 304: {"description": "not modified"},
    416: {"model": ErrorBody}}


@router.get("/{video_id}/content", responses=_CONTENT_RESPONSES, summary="Download an asset",
            operation_id="download_video_content")
@router.head("/{video_id}/content", responses=_CONTENT_RESPONSES, summary="An asset's headers",
             operation_id="head_video_content")
def video_content(
    video_id: str, tenant: Tenant, store: StoreDep, storage: StorageDep, settings: SettingsDep, request: Request,
    variant: Literal["video", "thumbnail", "spritesheet"] = "video",
):
    job = _owned_job(store, tenant, video_id)
    if job.status != "completed":
        raise APIError(404, f"video {video_id} has no content: it is {job.status}", param="video_id",
                       code="video_not_ready")
    asset = job.assets.get(variant)
    if (job.expires_at is not None and job.expires_at <= time.time()) or not asset:
        raise APIError(404, f"the {variant} of video {video_id} has expired or does not exist", param="variant",
                       code="content_expired")
    stored = storage.stat(asset["key"])
    if stored is None:
        raise APIError(404, f"the {variant} of video {video_id} is no longer stored", param="variant",
                       code="content_expired")
    if settings.content_redirect:
        url = storage.presigned_url(asset["key"], settings.presigned_url_seconds)
        if url:
            return RedirectResponse(url, status_code=302)
    content_type = asset.get("content_type") or VARIANTS[variant][0]
    headers = {
        "ETag": stored.etag, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600",
        "Content-Disposition": f'inline; filename="{video_id}.{VARIANTS[variant][1]}"',
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and (if_none_match.strip() == "*" or stored.etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]):
        return Response(status_code=304, headers=headers)
    byte_range = None
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header and (if_range is None or if_range.strip() == stored.etag):
        byte_range = _parse_range(range_header, stored.size)
    start, end = byte_range or (0, stored.size - 1)
    headers["Content-Length"] = str(max(0, end - start + 1))
    status = 200
    if byte_range is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{stored.size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=content_type)
    if stored.size == 0:
        return Response(b"", status_code=200, headers=headers, media_type=content_type)
    return StreamingResponse(storage.open_range(asset["key"], start, end), status_code=status, headers=headers,
                             media_type=content_type)


@router.post("/{video_id}/cancel", response_model=Video, responses=_ERRORS, summary="Cancel a queued or running video")
def cancel_video(video_id: str, tenant: Tenant, store: StoreDep, celery: CeleryDep, settings: SettingsDep,
                 response: Response) -> Video:
    job = _owned_job(store, tenant, video_id)
    outcome = store.request_cancel(video_id)
    if outcome in ("completed", "failed"):
        raise APIError(409, f"video {video_id} already {outcome}; there is nothing to cancel", param="video_id",
                       code="video_finished")
    if outcome == "missing":
        raise APIError(404, f"no video with id {video_id!r}", param="video_id", code="not_found")
    job = store.get(video_id) or job
    if outcome == "cancelled":
        # Queued: no worker is involved, so the API reports the cancellation itself.
        try:
            webhooks.enqueue_webhook(celery, settings, job, "video.cancelled")
        except Exception:
            log.exception("could not enqueue the video.cancelled webhook of %s", video_id)
    response.headers.update(_headers(job, settings))
    return _video(store, job)


@router.delete("/{video_id}", response_model=VideoDeleted, responses=_ERRORS, summary="Delete a finished video")
def delete_video(video_id: str, tenant: Tenant, store: StoreDep, storage: StorageDep) -> VideoDeleted:
    job = _owned_job(store, tenant, video_id)
    if not job.is_final:
        raise APIError(409, f"video {video_id} is {job.status}; cancel it before deleting", param="video_id",
                       code="video_running")
    # Assets first: if this fails the record remains and the delete can be retried.
    storage.delete_prefix(video_id)
    store.delete(video_id)
    return VideoDeleted(id=video_id)


@router.post("/{video_id}/remix", response_model=Video, responses=_ERRORS,
             openapi_extra={"requestBody": _json_schema_body(VideoRemixRequest)}, summary="Remix a completed video")
async def remix_video(
    video_id: str, request: Request, tenant: Tenant, store: StoreDep, celery: CeleryDep, settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    prefer: Annotated[str | None, Header()] = None,
):
    source = await run_in_threadpool(_owned_job, store, tenant, video_id)
    body = VideoRemixRequest.model_validate(await read_body(request), context={"settings": settings})
    if source.status != "completed":
        raise APIError(409, f"only a completed video can be remixed; {video_id} is {source.status}",
                       param="video_id", code="video_not_completed")
    job = Job(
        id=new_id("video"), tenant=tenant, model=source.model, prompt=body.prompt,
        negative_prompt=source.negative_prompt, width=source.width, height=source.height, seconds=source.seconds,
        fps=source.fps, frames=source.frames, seed=source.seed, steps=source.steps, guidance=source.guidance,
        created_at=int(time.time()), remixed_from_video_id=source.id, metadata=source.metadata,
        webhook_url=source.webhook_url, webhook_events=source.webhook_events,
    )
    body_hash = request_hash({"remix_of": source.id, "prompt": body.prompt})
    return await _enqueue(job, idempotency_key, body_hash, prefer, store, celery, settings)
