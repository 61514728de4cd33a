"""Settings come from REEL_* variables, once; bad ones fail at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_settings_read_reel_variables(monkeypatch):
    monkeypatch.setenv("REEL_REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("REEL_MAX_QUEUED", "5000")
    monkeypatch.setenv("REEL_WEBHOOK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("REEL_SIZES", "64x64,96x96")
    monkeypatch.setenv("REEL_STORAGE", "s3")
    monkeypatch.setenv("REEL_S3_BUCKET", "videos")
    settings = Settings()
    assert settings.redis_url == "redis://cache:6380/2" and settings.max_queued == 5000
    assert settings.webhook_allow_private is True and settings.sizes == ("64x64", "96x96")
    assert (settings.storage, settings.s3_bucket) == ("s3", "videos")
    assert settings.allow_anonymous is False and settings.api_key is None  # safe defaults


@pytest.mark.parametrize("overrides", [{"sizes": ["64by64"]}, {"default_size": "65x64"}, {"storage": "ftp"},
                                       {"max_queued": "many"}])
def test_bad_settings_fail_at_start_up(overrides):
    with pytest.raises(ValidationError):
        Settings(**overrides)
