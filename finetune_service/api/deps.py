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


def _principal(request: Request[Principal, Any, Any]) -> Principal:
    return request.user


def _services(state: State) -> Services:
    return state.services


def _catalog(services: NamedDependency[Services]) -> Catalog:
    return services.catalog


def _datasets(services: NamedDependency[Services]) -> DatasetsService:
    return services.datasets


def _jobs(services: NamedDependency[Services]) -> JobsService:
    return services.jobs


def _projects(services: NamedDependency[Services]) -> ProjectsService:
    return services.projects


def _completions(services: NamedDependency[Services]) -> CompletionsService:
    return services.completions


def _evaluations(services: NamedDependency[Services]) -> EvaluationsService:
    return services.evaluations


def _retrieval(services: NamedDependency[Services]) -> RetrievalService:
    return services.retrieval


def _media(services: NamedDependency[Services]) -> MediaService:
    return services.media


def _robin(services: NamedDependency[Services]) -> RobinService:
    return services.robin


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
