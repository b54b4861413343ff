"""Replay routes: `POST /v1/alerts/events/{event_id}/redeliver` and `POST /v1/webhook/recover`."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AwareDatetime

from app.auth.policy import require
from app.auth.scopes import Scope
from app.core.deps import DbSession, SettingsDep
from app.core.schemas import problem_responses
from app.keys.router import ActorDep
from app.webhooks.schemas import RecoveryAccepted, RedeliveryAccepted
from app.webhooks.service import ReplayService

router = APIRouter(prefix="/v1", tags=["webhooks"])


async def get_replay_service(session: DbSession, settings: SettingsDep) -> ReplayService:
    return ReplayService(session, settings)


Service = Annotated[ReplayService, Depends(get_replay_service)]


@router.post(
    "/alerts/events/{event_id}/redeliver",
    response_model=RedeliveryAccepted,
    status_code=202,
    summary="Deliver an alert event again, with the same webhook-id",
    dependencies=[require(Scope.ALERTS_WRITE)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def redeliver_event(
    event_id: Annotated[uuid.UUID, Path(description="The alert event's id")], service: Service, actor: ActorDep
) -> RedeliveryAccepted:
    return await service.redeliver(actor, event_id)


@router.post(
    "/webhook/recover",
    response_model=RecoveryAccepted,
    status_code=202,
    summary="Requeue your failed webhook deliveries since a time",
    dependencies=[require(Scope.WEBHOOKS_WRITE)],
    responses=problem_responses(401, 403, 422, 503),
)
async def recover_webhooks(
    since: Annotated[
        AwareDatetime,
        Query(description="RFC 3339 with a zone; deliveries created at or after it (at most 14 days back)."),
    ],
    service: Service,
    actor: ActorDep,
) -> RecoveryAccepted:
    return await service.recover(actor, since)
