"""`reel keys create | list | revoke` against the real store, and the key in use."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx


def reel(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REEL_REDIS_URL": redis_url}
    command = [str(Path(sys.executable).with_name("reel")), "keys", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_keys_create_list_revoke(api):
    created = reel(api.settings.redis_url, "create", "--tenant", "acme", "--name", "ci")
    assert created.returncode == 0, created.stderr
    key = re.search(r"api key:\s+(reel_sk_\S+)", created.stdout).group(1)
    key_id = re.search(r"key id:\s+(key_\S+)", created.stdout).group(1)
    secret = re.search(r"webhook secret:\s+(whsec_\S+)", created.stdout).group(1)
    assert api.store.tenant_webhook_secret("acme") == secret

    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}) as http:
        assert http.get("/v1/videos").status_code == 200
        listed = reel(api.settings.redis_url, "list")
        assert listed.returncode == 0
        assert key_id in listed.stdout and "acme" in listed.stdout and "ci" in listed.stdout
        assert key not in listed.stdout and secret not in listed.stdout  # never the secrets
        assert api.redis.get(key) is None and key.encode() not in b"".join(api.redis.keys("*"))  # stored hashed

        # A second key for the same tenant shares the tenant's webhook secret.
        again = reel(api.settings.redis_url, "create", "--tenant", "acme")
        assert re.search(r"webhook secret:\s+(whsec_\S+)", again.stdout).group(1) == secret

        revoked = reel(api.settings.redis_url, "revoke", key_id)
        assert revoked.returncode == 0
        assert http.get("/v1/videos").status_code == 401
    assert reel(api.settings.redis_url, "revoke", "key_nope").returncode == 1


def test_configured_api_key_is_registered_for_the_default_tenant(make_api):
    api = make_api(api_key="reel_sk_configured_for_serve")
    with api.client("reel_sk_configured_for_serve") as http:
        video = http.post("/v1/videos", json={"prompt": "p"}).json()
    assert api.store.get(video["id"]).tenant == "default"


def test_anonymous_requests_act_as_the_default_tenant_when_allowed(make_api):
    api = make_api(allow_anonymous=True)
    with api.client(None) as http:
        video = http.post("/v1/videos", json={"prompt": "p"}).json()
    assert api.store.get(video["id"]).tenant == "default"


def test_ui_is_served_at_root_when_present(make_api, tmp_path, monkeypatch):
    import app.main

    ui = tmp_path / "ui"
    ui.mkdir()
    (ui / "index.html").write_text("<!doctype html><title>Reel</title>")
    monkeypatch.setattr(app.main, "UI_DIR", ui)
    api = make_api()
    with api.client(None) as http:
        page = http.get("/")
        assert page.status_code == 200 and "<title>Reel</title>" in page.text
        assert http.get("/healthz").status_code == 200  # routes still win over the mount
        missing = http.get("/no-such-file.js")
        assert missing.status_code == 404 and "error" in missing.json()
