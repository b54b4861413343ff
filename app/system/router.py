"""Service documentation routes: the problem types referenced by every error's `type` member."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict

from app.core.errors import PROBLEM_TYPES, AppError
from app.core.schemas import problem_responses

router = APIRouter(tags=["system"])


class ProblemTypeDoc(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/key-expired",
                    "title": "API key expired",
                    "status": 401,
                    "description": "The key passed its expires_at.",
                }
            ]
        }
    )

    type: str
    title: str
    status: int
    description: str


class ProblemTypeNotFound(AppError):
    slug = "problem-type-not-found"
    title = "Unknown problem type"
    status = 404
    description = "No problem type with this name is documented."


@router.get("/problems", response_model=list[ProblemTypeDoc], summary="Every documented problem type")
async def list_problem_types() -> list[ProblemTypeDoc]:
    return [_doc(slug) for slug in sorted(PROBLEM_TYPES)]


@router.get(
    "/problems/{slug}",
    response_model=ProblemTypeDoc,
    summary="What a problem `type` means",
    responses=problem_responses(404),
)
async def get_problem_type(
    slug: Annotated[str, Path(description="The problem type's slug, e.g. `key-expired`")],
) -> ProblemTypeDoc:
    if slug not in PROBLEM_TYPES:
        raise ProblemTypeNotFound(f"No problem type named {slug!r}.")
    return _doc(slug)


def _doc(slug: str) -> ProblemTypeDoc:
    problem = PROBLEM_TYPES[slug]
    return ProblemTypeDoc(type=problem.uri, title=problem.title, status=problem.status, description=problem.description)
