"""Job views keyed by version, so polling a job that did not change never loads its row again."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from finetune_service.db.tables import Job
from finetune_service.schemas.jobs import JobView

CAPACITY = 20_000


@dataclass(frozen=True)
class VersionedView:
    version: int
    view: JobView


def job_view(job: Job) -> JobView:
    return JobView(
        id=job.id, name=job.name, description=job.description, provider=job.provider, model_name=job.base_model,
        provider_job_id=job.provider_job_id, fine_tuned_model=job.fine_tuned_model, status=job.status,
        raw_status=job.raw_status, progress=job.progress, metrics=job.metrics, error=job.error,
        dataset_path=job.dataset_id, split_name=job.split_name, validation_split=job.validation_split,
        format_type=job.format_type, data_strategy=job.data_strategy, system_message=job.system_message,
        thinking_instructions=job.thinking_instructions, training_file=job.training_output_id,
        validation_file=job.validation_output_id, parameters=job.parameters, project_id=job.project_id,
        task_id=job.task_id, created_at=job.created_at, updated_at=job.updated_at, started_at=job.started_at,
        finished_at=job.finished_at,
    )


class JobViewCache:
    """Every change a caller can see bumps the job's version (`job_state.touch`), so a view built
    from version v is right for exactly as long as the row is at v: entries are looked up by
    (id, version) and never need invalidating, even when another process wrote the row.
    Least recently used entries go first once `capacity` is reached."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[str, VersionedView]] = OrderedDict()

    def get(self, tenant_id: str, job_id: str, version: int) -> VersionedView | None:
        entry = self._entries.get(job_id)
        if entry is None or entry[0] != tenant_id or entry[1].version != version:
            return None
        self._entries.move_to_end(job_id)
        return entry[1]

    def put(self, job: Job) -> VersionedView:
        entry = VersionedView(job.version, job_view(job))
        current = self._entries.get(job.id)
        if current is None or current[1].version <= job.version:
            self._entries[job.id] = (job.tenant_id, entry)
            self._entries.move_to_end(job.id)
            if len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return entry
