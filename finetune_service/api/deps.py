"""Dependency providers: handlers ask for services by name and get the app's instances."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from finetune_service.auth import Principal
from finetune_service.container import Services
from finetune_service.services.catalog import Catalog
from finetune_service.services.completions import CompletionsService
from finetune_service.services.datasets import DatasetsService
from finetune_service.services.evaluations import EvaluationsService
from finetune_service.services.jobs import JobsService
from finetune_service.services.media import MediaService
from finetune_service.services.projects import ProjectsService
from finetune_service.services.retrieval import RetrievalService
from finetune_service.services.robin import RobinService

# Every provider below takes the principal without using it. Litestar resolves dependencies that
# do not depend on each other concurrently, in an anyio task group per request, and that costs
# about as much as the whole rest of a polling request (Python calls per `GET /jobs/{id}`: 710 with
# the task group, 352 without); chained after the principal they resolve one after another. It
# also means no service reaches a request that was not authenticated: the public routes read what
# they need from `state`.


def _principal(request: Request[Principal, Any, Any]) -> Principal:
    return request.user


def _services(state: State, principal: NamedDependency[Principal]) -> Services:
    return state.services


def _catalog(state: State, principal: NamedDependency[Principal]) -> Catalog:
    return state.services.catalog


def _datasets(state: State, principal: NamedDependency[Principal]) -> DatasetsService:
    return state.services.datasets


def _jobs(state: State, principal: NamedDependency[Principal]) -> JobsService:
    return state.services.jobs


def _projects(state: State, principal: NamedDependency[Principal]) -> ProjectsService:
    return state.services.projects


def _completions(state: State, principal: NamedDependency[Principal]) -> CompletionsService:
    return state.services.completions


def _evaluations(state: State, principal: NamedDependency[Principal]) -> EvaluationsService:
    return state.services.evaluations


def _retrieval(state: State, principal: NamedDependency[Principal]) -> RetrievalService:
    return state.services.retrieval


def _media(state: State, principal: NamedDependency[Principal]) -> MediaService:
    return state.services.media


def _robin(state: State, principal: NamedDependency[Principal]) -> RobinService:
    return state.services.robin


DEPENDENCIES = {
    "principal": Provide(_principal, sync_to_thread=False),
    "services": Provide(_services, sync_to_thread=False),
    "catalog": Provide(_catalog, sync_to_thread=False),
    "datasets": Provide(_datasets, sync_to_thread=False),
    "jobs": Provide(_jobs, sync_to_thread=False),
    "completions": Provide(_completions, sync_to_thread=False),
    "evaluations": Provide(_evaluations, sync_to_thread=False),
    "projects": Provide(_projects, sync_to_thread=False),
    "retrieval": Provide(_retrieval, sync_to_thread=False),
    "media": Provide(_media, sync_to_thread=False),
    "robin": Provide(_robin, sync_to_thread=False),
}
