"""Try a job's fine-tuned model and evaluate it: routes under /api/finetune/jobs/{job_id}."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from finetune_service.auth import Principal
from finetune_service.schemas.completions import JobTestBody
from finetune_service.schemas.evaluations import CreateEvaluationBody, EvaluationEnvelope, EvaluationList
from finetune_service.services.evaluations import EvaluationsService, evaluation_view


class EvaluationsController(Controller):
    path = "/api/finetune/jobs"
    tags = ["evaluations"]

    @post("/{job_id:str}/test", status_code=200,
          summary="Ask the job's fine-tuned model (messages or prompt); answers in chat.completion shape")
    async def test_job(
        self, job_id: FromPath[str], data: JSONBody[JobTestBody], principal: NamedDependency[Principal],
        evaluations: NamedDependency[EvaluationsService],
    ) -> Response[Any]:
        return Response(await evaluations.test(principal, job_id, data))

    @post("/{job_id:str}/evaluations", status_code=202,
          summary="Start an evaluation on a test split (or another dataset); poll it until it is finished",
          description="Metrics per model (means over answered rows, 0..1): exact_match (whitespace-collapsed, "
                      "case-sensitive equality), token_f1 (SQuAD-style F1 over lower-cased word tokens), "
                      "similarity (difflib SequenceMatcher ratio of the lower-cased texts).")
    async def create_evaluation(
        self, job_id: FromPath[str], data: JSONBody[CreateEvaluationBody], principal: NamedDependency[Principal],
        evaluations: NamedDependency[EvaluationsService],
    ) -> EvaluationEnvelope:
        return EvaluationEnvelope(evaluation=evaluation_view(await evaluations.create(principal, job_id, data)))

    @get("/{job_id:str}/evaluations", summary="The job's evaluations, newest first")
    async def list_evaluations(
        self, job_id: FromPath[str], principal: NamedDependency[Principal],
        evaluations: NamedDependency[EvaluationsService],
    ) -> EvaluationList:
        rows = await evaluations.list_for_job(principal, job_id)
        return EvaluationList(job_id=job_id, evaluations=[evaluation_view(r) for r in rows])

    @get("/{job_id:str}/evaluations/{evaluation_id:str}", summary="One evaluation with progress and metrics")
    async def get_evaluation(
        self, job_id: FromPath[str], evaluation_id: FromPath[str], principal: NamedDependency[Principal],
        evaluations: NamedDependency[EvaluationsService],
    ) -> EvaluationEnvelope:
        return EvaluationEnvelope(evaluation=evaluation_view(await evaluations.get(principal, job_id, evaluation_id)))

    @get("/{job_id:str}/evaluations/{evaluation_id:str}/results", summary="Scored rows as JSONL (so far)")
    async def evaluation_results(
        self, job_id: FromPath[str], evaluation_id: FromPath[str], principal: NamedDependency[Principal],
        evaluations: NamedDependency[EvaluationsService],
    ) -> Stream:
        evaluation, lines = await evaluations.results(principal, job_id, evaluation_id)
        return Stream(lines, media_type="application/x-ndjson", headers={
            "Content-Disposition": f'attachment; filename="{evaluation.id}.jsonl"'})
