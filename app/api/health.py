"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import StoreDep
from app.api.errors import APIError

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="The store answers and a worker with its model loaded was seen recently",
            responses={503: {"description": "not ready"}})
def readyz(store: StoreDep) -> dict:
    store.ping()  # an unreachable store raises and answers 503
    workers = store.workers()
    ready = [w for w in workers if w.get("model_loaded")]
    if not ready:
        reason = "no worker has been seen recently" if not workers else "no worker has its model loaded yet"
        raise APIError(503, f"not ready: {reason}", code="no_worker")
    return {"status": "ready", "workers": len(ready), "models": sorted({w.get("model", "") for w in ready})}
