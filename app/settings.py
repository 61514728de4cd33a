"""The service's settings: one object, built once per process from REEL_* variables.

Every limit the API enforces lives here, so that a deployment changes behaviour by
environment alone (`REEL_MAX_QUEUED=5000`) and tests build their own `Settings(...)`.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The model's training sizes; /v1/models falls back to these when no worker has reported its own.
STANDARD_SIZES = ("64x64", "112x64", "64x112", "96x96")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REEL_", extra="ignore")

    # Where things live
    redis_url: str = "redis://127.0.0.1:6379/0"  # job store and Celery broker
    data_dir: Path = Path("./reel-data")  # local assets (and the embedded Valkey's files)
    storage: Literal["local", "s3"] = "local"
    s3_bucket: str = "reel"
    s3_prefix: str = ""  # key prefix inside the bucket
    s3_endpoint_url: str | None = None  # e.g. http://minio:9000
    s3_region: str | None = None
    content_redirect: bool = True  # answer /content with 302 to a presigned URL when storage can make one
    presigned_url_seconds: int = 3600

    # The model and its defaults
    model: str = "reel-shapes-v1"
    fps: int = 8
    default_size: str = "64x64"
    default_seconds: int = 2
    default_steps: int = 20
    default_guidance: float = 4.0
    sizes: Annotated[tuple[str, ...], NoDecode] = STANDARD_SIZES  # advertised when no worker reports its own

    # Request limits (api.md)
    size_multiple: int = 16
    min_side: int = 32
    max_side: int = 256
    max_seconds: int = 8
    min_steps: int = 1
    max_steps: int = 100
    min_guidance: float = 0.0
    max_guidance: float = 20.0
    max_prompt_chars: int = 2000
    max_metadata_keys: int = 16
    max_body_bytes: int = 1024 * 1024
    max_queued: int = 1000  # queued jobs overall, then 429
    max_queued_per_tenant: int = 100  # queued jobs per tenant, then 429
    queue_full_retry_after_seconds: int = 30
    max_prefer_wait_seconds: int = 60

    # Lifetimes
    asset_ttl_seconds: int = 7 * 24 * 3600  # expires_at = completed_at + this
    job_deadline_seconds: int = 900  # a generation running longer is failed by the worker
    idempotency_ttl_seconds: int = 24 * 3600
    poll_after_ms: int = 1000  # openai-poll-after-ms while a job is queued or running
    worker_heartbeat_ttl_seconds: int = 30  # a worker not heard from for this long is gone
    events_ttl_seconds: int = 24 * 3600  # the SSE history of a finished job is kept this long

    # Webhooks
    webhook_allow_private: bool = False  # allow loopback/private/link-local targets (tests, private networks)
    webhook_timeout_seconds: float = 10.0

    # Tenants
    api_key: str | None = None  # a key for the default tenant, registered at start-up (`reel serve`)
    default_tenant: str = "default"
    allow_anonymous: bool = False  # requests without a key act as the default tenant

    # Redis client timeouts: a store that does not answer gives 503, not a hang.
    redis_socket_timeout: float = 5.0
    redis_connect_timeout: float = 2.0
    broker_send_timeout: float = 3.0

    # Beyond one machine (docs/deploy.md)
    s3_public_endpoint_url: str | None = None  # the S3 endpoint clients reach for presigned URLs, when not s3_endpoint_url
    device: str = "auto"  # where a worker runs the model: auto (cuda when a GPU is visible), cuda, cuda:N, cpu

    @field_validator("sizes", mode="before")
    @classmethod
    def _split_sizes(cls, value):
        # REEL_SIZES="64x64,112x64" as well as a JSON list.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return tuple(json.loads(value))
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _sizes_are_sizes(self) -> "Settings":
        # A misconfigured size fails at start-up, not as a 500 on some later request.
        for size in (*self.sizes, self.default_size):
            match = re.fullmatch(r"(\d+)x(\d+)", size)
            if not match or any(int(side) % self.size_multiple or not self.min_side <= int(side) <= self.max_side
                                for side in match.groups()):
                raise ValueError(f"size {size!r} is not 'WxH' with sides multiples of {self.size_multiple} "
                                 f"in [{self.min_side}, {self.max_side}]")
        return self

    @property
    def assets_dir(self) -> Path:
        return Path(self.data_dir) / "assets"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
