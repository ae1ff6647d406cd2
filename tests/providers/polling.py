"""Helpers the provider tests share."""

from __future__ import annotations

import asyncio
import time

from finetune_service.providers.base import CreateJobRequest, FineTuneProvider, JobStatus, ProviderJob


def job_request(training_file_id: str, model: str, reference: str = "job-ref-1",
                **parameters: object) -> CreateJobRequest:
    return CreateJobRequest(model=model, training_file_id=training_file_id, validation_file_id=None,
                            parameters=dict(parameters), client_reference=reference)


async def wait_for(provider: FineTuneProvider, job_id: str, *statuses: JobStatus, within: float = 8.0) -> ProviderJob:
    deadline = time.monotonic() + within
    while True:
        job = await provider.get_job(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"job stuck in {job.raw_status}"
        await asyncio.sleep(0.03)
