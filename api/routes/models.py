"""`/v1/models`: presets, registered base models, the team's fine-tuned models and its jobs'
checkpoints (`ft:...:ckpt-step-N`)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentTeam, SessionDep
from api.openapi import error_responses
from api.schemas.common import ListResponse
from api.schemas.models import ModelPublic
from api.services import models as service

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=ListResponse[ModelPublic])
def list_models(session: SessionDep, team: CurrentTeam) -> ListResponse[ModelPublic]:
    return ListResponse(data=service.list_models(session=session, team=team))


# `:path` because model ids contain slashes (replayft/llama-tiny, ft:replayft/llama-tiny:...)
@router.get("/{model_id:path}", response_model=ModelPublic, responses=error_responses(400, 404))
def retrieve_model(model_id: str, session: SessionDep, team: CurrentTeam) -> ModelPublic:
    return service.get_model(session=session, team=team, model_id=model_id)
