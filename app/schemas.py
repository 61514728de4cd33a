"""Request and response models: the public contract of /v1 (see specs/api.md).

Limits come from the settings, handed to validation as pydantic context
(`VideoCreateRequest.model_validate(data, context={"settings": settings})`), so a
bad field fails as a ValidationError whose location names the `param`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.jobs import Job

VideoStatus = Literal["queued", "in_progress", "completed", "failed", "cancelled"]
WEBHOOK_EVENTS = ("video.queued", "video.started", "video.progress", "video.completed", "video.failed", "video.cancelled")
WebhookEvent = Literal["video.queued", "video.started", "video.progress", "video.completed", "video.failed", "video.cancelled"]
# Without `webhook_events`, a job with a webhook_url reports how it ended, like OpenAI's own webhooks.
DEFAULT_WEBHOOK_EVENTS = ("video.completed", "video.failed", "video.cancelled")

# OpenAI's sizes (Sora): portrait and landscape, mapped onto the served model's sizes of that shape.
OPENAI_PORTRAIT_SIZES = ("720x1280", "1024x1792")
OPENAI_LANDSCAPE_SIZES = ("1280x720", "1792x1024")
# OpenAI's model names are taken to mean the deployment's default model.
OPENAI_MODEL_NAMES = ("sora-2", "sora-2-pro")

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")


def _settings(info: ValidationInfo):
    return (info.context or {})["settings"]


def parse_size(value: str, settings) -> tuple[int, int]:
    """'WxH' within the limits, or one of OpenAI's names mapped onto a served size."""
    if value in OPENAI_PORTRAIT_SIZES + OPENAI_LANDSCAPE_SIZES:
        portrait = value in OPENAI_PORTRAIT_SIZES
        for candidate in settings.sizes:
            w, h = (int(p) for p in candidate.split("x"))
            if (h > w) == portrait and h != w:
                return w, h
        raise ValueError(f"size {value!r} has no {'portrait' if portrait else 'landscape'} equivalent on this deployment")
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"size must be 'WxH' (e.g. '64x64'), got {value!r}")
    width, height = int(match.group(1)), int(match.group(2))
    lo, hi, step = settings.min_side, settings.max_side, settings.size_multiple
    for side in (width, height):
        if side % step or not lo <= side <= hi:
            raise ValueError(f"width and height must be multiples of {step} between {lo} and {hi}, got {value!r}")
    return width, height


class VideoCreateRequest(BaseModel):
    """POST /v1/videos, as JSON or multipart/form-data (the openai SDK sends the latter)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="What the video shows (1-2000 characters).",
                        examples=["a red circle moving left on a white background"])
    model: str | None = Field(default=None, description="Model name; defaults to the deployment's model.")
    size: str | None = Field(default=None, description="'WxH', multiples of 16, or one of OpenAI's size names.",
                             examples=["64x64", "112x64", "1280x720"])
    seconds: int | float | str | None = Field(default=None, description="Duration in whole seconds (0 is a still image).",
                                              examples=["2", 4])
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="Random seed; drawn at random when omitted.")
    steps: int | None = Field(default=None, description="Sampler steps (1-100).", examples=[20])
    guidance: float | None = Field(default=None, allow_inf_nan=False, description="Classifier-free guidance scale (0-20).",
                                   examples=[4.0])
    negative_prompt: str | None = Field(default=None, description="What the video should not show.")
    webhook_url: str | None = Field(default=None, max_length=2048, description="Where to POST signed events.")
    webhook_events: list[WebhookEvent] | None = Field(default=None, description="Events to deliver to webhook_url.")
    metadata: dict[str, str] | None = Field(default=None, description="Up to 16 string pairs kept with the job.")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str, info: ValidationInfo) -> str:
        limit = _settings(info).max_prompt_chars
        if not value.strip():
            raise ValueError("prompt must not be empty")
        if len(value) > limit:
            raise ValueError(f"prompt must be at most {limit} characters, got {len(value)}")
        return value

    @field_validator("negative_prompt")
    @classmethod
    def _negative_prompt(cls, value: str | None, info: ValidationInfo) -> str | None:
        limit = _settings(info).max_prompt_chars
        if value is not None and len(value) > limit:
            raise ValueError(f"negative_prompt must be at most {limit} characters, got {len(value)}")
        return value or None

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        width, height = parse_size(value, _settings(info))
        return f"{width}x{height}"

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds(cls, value: Any, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        limit = _settings(info).max_seconds
        if isinstance(value, bool):
            raise ValueError("seconds must be a number")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"seconds must be a whole number of seconds, got {value!r}") from None
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
            raise ValueError(f"seconds must be a whole number of seconds, got {value!r}")
        if not 0 <= int(value) <= limit:
            raise ValueError(f"seconds must be between 0 and {limit}, got {int(value)}")
        return int(value)

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: int | None, info: ValidationInfo) -> int | None:
        s = _settings(info)
        if value is not None and not s.min_steps <= value <= s.max_steps:
            raise ValueError(f"steps must be between {s.min_steps} and {s.max_steps}, got {value}")
        return value

    @field_validator("guidance")
    @classmethod
    def _guidance(cls, value: float | None, info: ValidationInfo) -> float | None:
        s = _settings(info)
        if value is not None and not s.min_guidance <= value <= s.max_guidance:
            raise ValueError(f"guidance must be between {s.min_guidance:g} and {s.max_guidance:g}, got {value}")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return value or None

    @field_validator("webhook_events", mode="before")
    @classmethod
    def _webhook_events(cls, value: Any) -> Any:
        # Forms send a JSON list, a comma-separated string, or repeated fields.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError("webhook_events must be a JSON list or comma-separated event names") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("webhook_events")
    @classmethod
    def _events_need_a_url(cls, value: list | None, info: ValidationInfo) -> list | None:
        if value and not info.data.get("webhook_url"):
            raise ValueError("webhook_events needs a webhook_url")
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_before(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError("metadata must be a JSON object of strings") from None
            if not isinstance(value, dict):
                raise ValueError("metadata must be a JSON object of strings")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        if value is None:
            return None
        limit = _settings(info).max_metadata_keys
        if len(value) > limit:
            raise ValueError(f"metadata may hold at most {limit} keys")
        for key, item in value.items():
            if not key or len(key) > 64 or len(item) > 512:
                raise ValueError("metadata keys must be 1-64 characters and values at most 512")
        return value


class VideoRemixRequest(BaseModel):
    """POST /v1/videos/{id}/remix: a new prompt for a finished video's size, duration and seed."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="The new prompt (1-2000 characters).")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str, info: ValidationInfo) -> str:
        return VideoCreateRequest._prompt(value, info)


class VideoError(BaseModel):
    code: str
    message: str


class Video(BaseModel):
    """The video object (specs/api.md)."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: VideoStatus
    progress: int
    queue_position: int | None = None
    created_at: int
    started_at: int | None = None
    completed_at: int | None = None
    expires_at: int | None = None
    prompt: str
    negative_prompt: str | None = None
    size: str
    seconds: str
    fps: int
    frames: int
    seed: int
    steps: int
    guidance: float
    error: VideoError | None = None
    remixed_from_video_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_job(cls, job: Job, queue_position: int | None = None) -> "Video":
        return cls(
            id=job.id, model=job.model, status=job.status, progress=job.progress,
            queue_position=queue_position if job.status == "queued" else None,
            created_at=job.created_at, started_at=job.started_at, completed_at=job.completed_at,
            expires_at=job.expires_at, prompt=job.prompt, negative_prompt=job.negative_prompt, size=job.size,
            seconds=str(job.seconds), fps=job.fps, frames=job.frames, seed=job.seed, steps=job.steps,
            guidance=job.guidance, error=VideoError(**job.error) if job.error else None,
            remixed_from_video_id=job.remixed_from_video_id, metadata=job.metadata,
        )


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Video]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    """One entry of GET /v1/models: OpenAI's model object plus what the model accepts."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "reel"
    sizes: list[str]
    seconds: list[int]
    fps: int
    default_steps: int
    default_guidance: float
    workers: int  # workers serving it right now


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class WebhookEventBody(BaseModel):
    """The body of a webhook delivery."""

    id: str
    object: Literal["event"] = "event"
    type: WebhookEvent
    created_at: int
    data: Video
