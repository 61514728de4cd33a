"""API keys and tenants.

A key (`reel_sk_...`, 256 random bits) is shown once and stored only as its SHA-256;
a slow hash buys nothing for keys this long. Each key belongs to a tenant; each tenant
has a webhook signing secret (`whsec_<base64>`) that `reel keys create` prints.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import SettingsDep, StoreDep
from app.api.errors import APIError
from app.jobs import JobStore, new_id

KEY_PREFIX = "reel_sk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def create_key(store: JobStore, tenant: str, name: str = "") -> tuple[str, str, str]:
    """A new key for `tenant` (made if new): returns (key, key_id, the tenant's webhook secret)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id("key")
    secret = store.ensure_tenant(tenant, new_webhook_secret())
    store.add_api_key(hash_key(key), key_id, tenant, name)
    return key, key_id, secret


def ensure_key(store: JobStore, tenant: str, key: str, name: str = "default") -> str:
    """Register a given key for `tenant` unless it is already known (`reel serve --api-key`);
    returns the tenant's webhook secret."""
    secret = store.ensure_tenant(tenant, new_webhook_secret())
    if store.api_key(hash_key(key)) is None:
        store.add_api_key(hash_key(key), new_id("key"), tenant, name)
    return secret


def tenant_for_key(store: JobStore, key: str) -> str | None:
    record = store.api_key(hash_key(key))
    if record is None or record.get("revoked") == "1":
        return None
    return record["tenant"]


# Declares the scheme in the OpenAPI document (and the "Authorize" button of /docs); the
# header itself is read below, to tell a missing key from a malformed one.
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer reel_sk_...`")


def current_tenant(request: Request, store: StoreDep, settings: SettingsDep,
                   _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None) -> str:
    """The tenant of the request's `Authorization: Bearer` key, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        if settings.allow_anonymous:
            return settings.default_tenant
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(401, "malformed Authorization header: expected 'Bearer <key>'")
    tenant = tenant_for_key(store, key.strip())
    if tenant is None:
        raise APIError(401, "invalid or revoked API key")
    return tenant


Tenant = Annotated[str, Depends(current_tenant)]


def keys_command(args) -> int:
    """`reel keys create --tenant NAME [--name LABEL] | list | revoke KEY_ID`."""
    import redis

    from app.settings import get_settings

    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.redis_connect_timeout,
                                  socket_timeout=settings.redis_socket_timeout)
    store = JobStore(client, settings)
    try:
        if args.keys_command == "create":
            key, key_id, secret = create_key(store, args.tenant, args.name)
            print(f"key id:         {key_id}")
            print(f"tenant:         {args.tenant}")
            print(f"api key:        {key}")
            print(f"webhook secret: {secret}")
            print("The API key is shown only this once; store it now.")
            return 0
        if args.keys_command == "list":
            records = store.api_keys()
            print(f"{'id':<34} {'tenant':<20} {'name':<20} {'created (UTC)':<20} revoked")
            for record in records:
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(record["created_at"])))
                print(f"{record['id']:<34} {record['tenant']:<20} {record['name']:<20} {created:<20} "
                      f"{'yes' if record['revoked'] == '1' else 'no'}")
            return 0
        if args.keys_command == "revoke":
            if store.revoke_api_key(args.key_id):
                print(f"revoked {args.key_id}")
                return 0
            print(f"no key with id {args.key_id}", file=sys.stderr)
            return 1
    except redis.exceptions.ConnectionError as exc:
        print(f"cannot reach the store at {settings.redis_url}: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    raise ValueError(f"unknown keys command {args.keys_command!r}")
