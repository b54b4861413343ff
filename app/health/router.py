"""Probes for the load balancer and orchestrator: liveness, readiness, start-up."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.core.deps import EngineDep, LifecycleDep, RedisDep, SettingsDep
from app.core.errors import AppError
from app.core.metrics import READY
from app.core.schemas import problem_responses
from app.health.service import readiness

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"


class Check(BaseModel):
    name: str = Field(examples=["database"])
    status: Literal["ok", "fail"]
    required: bool = Field(description="A failed required check makes the instance not ready (503).")
    latency_ms: float
    detail: str


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "checks": [
                        {
                            "name": "database",
                            "status": "ok",
                            "required": True,
                            "latency_ms": 1.2,
                            "detail": "schema at head",
                        },
                        {"name": "redis", "status": "ok", "required": False, "latency_ms": 0.4, "detail": "ping"},
                    ],
                }
            ]
        }
    )

    status: Literal["ok", "degraded"] = Field(description="`degraded`: an optional dependency (Redis) failed.")
    checks: list[Check]


class Startup(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "started"}]})

    status: Literal["started"] = "started"


class NotReady(AppError):
    slug = "not-ready"
    title = "Instance not ready"
    status = 503
    description = "A required dependency failed its readiness check, or the instance is draining for shutdown."


class NotStarted(AppError):
    slug = "not-started"
    title = "Instance still starting"
    status = 503
    description = "Start-up has not finished yet."


@router.get("/healthz", response_model=Liveness, summary="Liveness: the process answers; touches no dependency")
async def healthz() -> Liveness:
    return Liveness()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: database reachable with a current schema; Redis reported",
    responses=problem_responses(503),
)
async def readyz(settings: SettingsDep, lifecycle: LifecycleDep, engine: EngineDep, redis: RedisDep) -> Readiness:
    if lifecycle.draining:
        READY.set(0)
        raise NotReady("Draining for shutdown.", extensions={"checks": []}, headers={"retry-after": "5"})
    results = await readiness(engine, redis, settings.readiness_check_timeout_seconds)
    checks = [
        Check(name=r.name, status=r.status, required=r.required, latency_ms=r.latency_ms, detail=r.detail)
        for r in results
    ]
    failed_required = [c for c in checks if c.required and c.status == "fail"]
    READY.set(0 if failed_required else 1)
    if failed_required:
        raise NotReady(
            "; ".join(f"{c.name}: {c.detail}" for c in failed_required),
            extensions={"checks": [c.model_dump() for c in checks]},
        )
    degraded = any(c.status == "fail" for c in checks)
    return Readiness(status="degraded" if degraded else "ok", checks=checks)


@router.get(
    "/startupz",
    response_model=Startup,
    summary="Start-up: 200 once the lifespan start-up finished",
    responses=problem_responses(503),
)
async def startupz(lifecycle: LifecycleDep) -> Startup:
    if not lifecycle.started:
        raise NotStarted("Start-up has not finished.")
    return Startup()
