"""Translate OpenAI's files / fine-tuning API onto our datasets and jobs.

The openai SDK pointed at `/v1` runs a fine-tune on any provider: the model name chooses
the provider (`together/<model>`, `sandbox/<model>`, ...), uploaded files are datasets, and
OpenAI's hyperparameters become the chosen provider's own parameter names.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from finetune_service.db.tables import Dataset, Job, JobEvent
from finetune_service.errors import ValidationFailed
from finetune_service.providers.base import JobStatus, ProviderCheckpoint, ProviderName
from finetune_service.schemas.jobs import CreateJobBody
from finetune_service.schemas.openai_v1 import (
    CreateFineTuningJob,
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    Hyperparameters,
    JobError,
)

# OpenAI's hyperparameter -> each provider's parameter of the same meaning.
_PARAMETER_NAMES: dict[str, dict[ProviderName, str]] = {
    "n_epochs": {ProviderName.SANDBOX: "n_epochs", ProviderName.TOGETHER_AI: "n_epochs",
                 ProviderName.OPENAI: "n_epochs", ProviderName.FIREWORKS_AI: "epochs"},
    "batch_size": {ProviderName.SANDBOX: "batch_size", ProviderName.TOGETHER_AI: "batch_size",
                   ProviderName.OPENAI: "batch_size", ProviderName.FIREWORKS_AI: "batchSizeSamples"},
    "learning_rate_multiplier": {ProviderName.OPENAI: "learning_rate_multiplier"},
    "beta": {ProviderName.OPENAI: "beta", ProviderName.TOGETHER_AI: "dpo_beta"},
    "suffix": {ProviderName.SANDBOX: "suffix", ProviderName.TOGETHER_AI: "suffix", ProviderName.OPENAI: "suffix"},
    "seed": {ProviderName.TOGETHER_AI: "random_seed", ProviderName.OPENAI: "seed"},
}
_METHOD_PARAMETER = {ProviderName.SANDBOX: "training_method", ProviderName.TOGETHER_AI: "training_method",
                     ProviderName.OPENAI: "method"}
_METHOD_VALUES = {ProviderName.OPENAI: {"supervised": "supervised", "dpo": "dpo"}}
_STATUS = {
    JobStatus.CREATING: "validating_files", JobStatus.VALIDATING: "validating_files", JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "running", JobStatus.PAUSED: "paused", JobStatus.CANCELLING: "cancelled",
    JobStatus.SUCCEEDED: "succeeded", JobStatus.FAILED: "failed", JobStatus.CANCELLED: "cancelled",
}


def unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment else None


def resolve_model(model: str, aliases: Mapping[str, str]) -> tuple[ProviderName, str]:
    """`provider/model` (or an alias of one) -> (provider, the provider's model id)."""
    target = aliases.get(model, model)
    prefix, _, name = target.partition("/")
    provider = ProviderName.parse(prefix) if name else None
    if provider is None:
        choices = ", ".join(f"{p.prefix}/<model>" for p in ProviderName)
        raise ValidationFailed(f"model {model!r} must name its provider: {choices}", param="model")
    return provider, name


def _set(parameters: dict[str, Any], provider: ProviderName, name: str, value: Any, param: str) -> None:
    if value is None or value == "auto":
        return
    target = _PARAMETER_NAMES[name].get(provider)
    if target is None:
        raise ValidationFailed(f"{param} is not supported by {provider.value}", param=param)
    parameters[target] = value


def job_body(request: CreateFineTuningJob, aliases: Mapping[str, str]) -> CreateJobBody:
    provider, model = resolve_model(request.model, aliases)
    method = request.method.type if request.method else "supervised"
    method_params = request.method.dpo if request.method and method == "dpo" else (
        request.method.supervised if request.method else None)
    hyper = (method_params.hyperparameters if method_params else None) or request.hyperparameters or Hyperparameters()
    parameters: dict[str, Any] = {}
    for name in ("n_epochs", "batch_size", "learning_rate_multiplier", "beta"):
        _set(parameters, provider, name, getattr(hyper, name), f"hyperparameters.{name}")
    _set(parameters, provider, "suffix", request.suffix, "suffix")
    _set(parameters, provider, "seed", request.seed, "seed")
    if method == "dpo" or provider in _METHOD_VALUES:
        target = _METHOD_PARAMETER.get(provider)
        if target is None:
            raise ValidationFailed(f"method {method!r} is not supported by {provider.value}", param="method.type")
        parameters[target] = _METHOD_VALUES.get(provider, {"supervised": "sft", "dpo": "dpo"})[method]
    return CreateJobBody(
        name=request.suffix or "fine-tune", provider=provider.value, model_name=model,
        dataset_path=request.training_file, validation_dataset_path=request.validation_file,
        parameters=parameters, split_name="all",
        format_type="dpo_preference_jsonl" if method == "dpo" else "openai_chat_jsonl",
    )


def file_object(dataset: Dataset) -> FileObject:
    return FileObject(id=dataset.id, bytes=dataset.bytes, created_at=unix(dataset.created_at) or 0,
                      filename=dataset.filename, purpose=dataset.purpose or "fine-tune")


def fine_tuning_job(job: Job, validation_file: str | None) -> FineTuningJob:
    status = JobStatus(job.status)
    epochs = job.parameters.get("n_epochs", job.parameters.get("epochs", "auto"))
    return FineTuningJob(
        id=job.id, created_at=unix(job.created_at) or 0,
        error=JobError(code="job_failed", message=job.error) if status is JobStatus.FAILED and job.error else None,
        fine_tuned_model=job.fine_tuned_model, finished_at=unix(job.finished_at),
        hyperparameters={"n_epochs": epochs, "batch_size": job.parameters.get("batch_size", "auto"),
                         "learning_rate_multiplier": job.parameters.get("learning_rate_multiplier", "auto")},
        model=f"{ProviderName(job.provider).prefix}/{job.base_model}", organization_id=job.tenant_id,
        result_files=[], seed=int(job.parameters.get("seed", job.parameters.get("random_seed", 0)) or 0),
        status=_STATUS[status], trained_tokens=job.metrics.get("trained_tokens"),
        training_file=job.dataset_id or "", validation_file=validation_file,
        method={"type": "dpo" if job.format_type == "dpo_preference_jsonl" else "supervised"},
    )


def job_event(event: JobEvent) -> FineTuningJobEvent:
    return FineTuningJobEvent(id=f"ftevent-{event.id}", created_at=unix(event.created_at) or 0,
                              level="warn" if event.level == "warning" else event.level, message=event.message,
                              type="metrics" if event.type == "metrics" else "message")


def job_checkpoint(job: Job, checkpoint: ProviderCheckpoint) -> FineTuningJobCheckpoint:
    return FineTuningJobCheckpoint(
        id=checkpoint.id, created_at=unix(checkpoint.created_at) or 0,
        fine_tuned_model_checkpoint=checkpoint.model or "", fine_tuning_job_id=job.id,
        metrics=dict(checkpoint.metrics), step_number=checkpoint.step or 0,
    )
