"""/v1/models: what this deployment serves, from the workers' heartbeats."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import SettingsDep, StoreDep
from app.auth import Tenant
from app.schemas import ErrorBody, ModelCard, ModelList

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_cards(store, settings) -> list[ModelCard]:
    by_model: dict[str, list[dict]] = {}
    for worker in store.workers():
        by_model.setdefault(worker.get("model") or settings.model, []).append(worker)
    if not by_model:
        # No worker yet: advertise the configured model with the settings' sizes.
        by_model[settings.model] = []
    cards = []
    for name, workers in sorted(by_model.items()):
        info = workers[0] if workers else {}
        cards.append(ModelCard(
            id=name,
            sizes=[s if isinstance(s, str) else f"{s[0]}x{s[1]}" for s in info.get("sizes", settings.sizes)],
            seconds=list(info.get("seconds", range(settings.max_seconds + 1))),
            fps=info.get("fps", settings.fps),
            default_steps=info.get("default_steps", settings.default_steps),
            default_guidance=info.get("default_guidance", settings.default_guidance),
            workers=len(workers),
        ))
    return cards


@router.get("", response_model=ModelList, responses={401: {"model": ErrorBody}}, summary="List the served models")
def list_models(tenant: Tenant, store: StoreDep, settings: SettingsDep) -> ModelList:
    return ModelList(data=model_cards(store, settings))
