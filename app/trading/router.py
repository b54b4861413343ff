"""Trading routes: POST /v1/analyze (bring your own candles and trades)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from app.auth.policy import require
from app.auth.scopes import Scope
from app.config import Settings
from app.core.middleware import BODY_LIMITS_STATE
from app.core.schemas import problem_responses
from app.trading.examples import ANALYZE_EXAMPLE
from app.trading.schemas import AnalyzeRequest, AnalyzeResponse, inline_schema
from app.trading.service import AnalysisRunner, shared_runner

ANALYZE_PATH = "/v1/analyze"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    limits = getattr(app.state, BODY_LIMITS_STATE, None) or {}
    limits[ANALYZE_PATH] = settings.analyze_max_body_bytes
    setattr(app.state, BODY_LIMITS_STATE, limits)
    async with shared_runner(app.state, settings):
        yield


router = APIRouter(tags=["trading"], lifespan=lifespan)


async def get_runner(request: Request) -> AnalysisRunner:
    runner: AnalysisRunner = request.app.state.analysis_runner
    return runner


RunnerDep = Annotated[AnalysisRunner, Depends(get_runner)]


@router.post(
    ANALYZE_PATH,
    dependencies=[require(Scope.SIGNALS_READ)],
    summary="Analyse your own candles (and trades): every requested module plus the signal",
    response_class=Response,
    responses={
        200: {
            "model": AnalyzeResponse,
            "description": "Module outputs and the signal on the last bar.",
            "content": {"application/json": {"example": ANALYZE_EXAMPLE}},
        },
        **problem_responses(400, 413, 422, 503),
    },
    # The body is read raw and validated column-wise (see app/trading/parsing.py); the model documents it.
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(AnalyzeRequest)}}}
    },
)
async def analyze(request: Request, runner: RunnerDep) -> Response:
    async with runner.admission():
        body = await request.body()
        content = await runner.run(body)
    return Response(content, media_type="application/json")
