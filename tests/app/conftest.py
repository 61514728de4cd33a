"""Fixtures for the API tests: a real uvicorn server on a free port, against the session's Valkey."""

from __future__ import annotations

import pytest

from api_harness import RunningAPI
from app.settings import Settings


@pytest.fixture
def make_api(redis_url, tmp_path):
    """Start an API with settings overrides: `make_api(max_queued=2)`."""
    started: list[RunningAPI] = []

    def make(**overrides) -> RunningAPI:
        values = {"redis_url": redis_url, "data_dir": tmp_path / "data", "webhook_allow_private": False}
        values.update(overrides)
        api = RunningAPI(Settings(**values)).start()
        started.append(api)
        return api

    yield make
    for api in started:
        api.stop()


@pytest.fixture
def api(make_api) -> RunningAPI:
    return make_api()


@pytest.fixture
def key(api) -> str:
    return api.new_key("acme")


@pytest.fixture
def client(api, key):
    with api.client(key) as http:
        yield http
