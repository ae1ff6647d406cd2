"""A loopback emulator of OpenAI's files / fine-tuning / chat / embeddings / models API.

It speaks the wire contract the real `openai` SDK (3.x, httpx2) expects — see
`shared/specs/PROVIDERS.md` §2 — so tests point `AsyncOpenAI(base_url=f"{url}/v1")` at it.
A fine-tuned model is the sandbox engine's nearest-neighbour responder over the job's
training file; job status is a pure function of time (`timeline_at`), so tests only wait.

    emulator = create_openai_emulator(step_seconds=0.05)
    with serve_in_thread(emulator.app) as url:
        client = AsyncOpenAI(api_key="test-openai-key", base_url=f"{url}/v1")
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from litestar import Response

from finetune_service.providers.sandbox_engine import (
    RUNNING_STEPS,
    NearestNeighbourResponder,
    simulated_loss,
    timeline_at,
)
from tests.emulators.chat import (
    EmulatorError,
    EmulatorRequest,
    RoutedEmulator,
    bearer_key,
    chat_answer_response,
    content_text,
    count_tokens,
    embedding_inputs,
    embeddings_body,
    json_response,
    masked_key,
    random_id,
    validate_chat_body,
)
from tests.emulators.media import AUDIO_EXTENSIONS, emulated_png, spoken_text, transcript_body

FINE_TUNABLE_MODELS = (
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
    "gpt-4o-2024-08-06",
    "gpt-4o-mini-2024-07-18",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-1106",
)
DPO_MODELS = frozenset(FINE_TUNABLE_MODELS[:5])
CHAT_ALIASES = ("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo")
EMBEDDING_MODELS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
MIN_EXAMPLES = 10
ORDER = ("validating", "queued", "running", "succeeded")
# Image models and their sizes (openai-openapi.yaml CreateImageRequest).
IMAGE_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image-1": ("auto", "1024x1024", "1536x1024", "1024x1536"),
    "gpt-image-1-mini": ("auto", "1024x1024", "1536x1024", "1024x1536"),
    "gpt-image-1.5": ("auto", "1024x1024", "1536x1024", "1024x1536"),
}
TRANSCRIBE_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
AUDIO_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


def _error_body(path: str, error: EmulatorError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "file", "bytes": len(self.content), "created_at": self.created_at,
            "filename": self.filename, "purpose": self.purpose, "status": "processed",
            # expires_at / status_details are omitted when unset: the spec types them non-nullable.
        }


@dataclass
class EmulatedJob:
    id: str
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    method_type: str
    hyperparameters: dict[str, Any]
    created_at: int
    created_mono: float
    planned_model: str
    responder: NearestNeighbourResponder
    training_tokens: int
    examples: int
    stage: str = "validating"  # timeline stage, or "cancelled"/"failed"
    step: int = 0
    paused_at: float | None = None
    paused_total: float = 0.0
    finished_at: int | None = None
    error: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    result_files: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # oldest first

    @property
    def status(self) -> str:
        if self.stage in ("cancelled", "failed"):
            return self.stage
        if self.paused_at is not None:
            return "paused"
        return "validating_files" if self.stage == "validating" else self.stage

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")

    @property
    def total_steps(self) -> int:
        epochs = int(self.hyperparameters["n_epochs"])
        batch = int(self.hyperparameters["batch_size"])
        return max(RUNNING_STEPS, -(-self.examples * epochs // batch))

    def body(self, step_seconds: float) -> dict[str, Any]:
        hyper = dict(self.hyperparameters)
        method_hyper = dict(hyper)
        top_hyper = {k: hyper[k] for k in ("batch_size", "learning_rate_multiplier", "n_epochs")}
        total = step_seconds * (len(ORDER) + RUNNING_STEPS - 2) + self.paused_total
        return {
            "object": "fine_tuning.job",
            "id": self.id,
            "model": self.model,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "fine_tuned_model": self.fine_tuned_model,
            "organization_id": OpenAIEmulator.organization_id,
            "result_files": list(self.result_files),
            "status": self.status,
            "validation_file": self.validation_file,
            "training_file": self.training_file,
            "trained_tokens": self.trained_tokens,
            "error": self.error,
            "seed": self.seed,
            "estimated_finish": None if self.finished else self.created_at + max(1, round(total)),
            "integrations": None,
            "metadata": self.metadata,
            "user_provided_suffix": self.suffix,
            "usage_metrics": None,
            "shared_with_openai": False,
            "hyperparameters": top_hyper,
            "method": {"type": self.method_type, self.method_type: {"hyperparameters": method_hyper}},
        }


def _check_message_list(messages: Any, where: str, *, need_assistant: bool) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f"{where} must be a non-empty array"
    has_assistant = False
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"{where}[{index}] must be an object"
        role = message.get("role")
        if role not in ROLES:
            return f"{where}[{index}].role {role!r} is not one of {sorted(ROLES)}"
        content = message.get("content")
        if content is None and not (role == "assistant" and message.get("tool_calls")):
            return f"{where}[{index}] is missing 'content'"
        if content is not None and not isinstance(content, str | list):
            return f"{where}[{index}].content must be a string or an array of parts"
        weight = message.get("weight")
        if weight is not None and (role != "assistant" or weight not in (0, 1)):
            return f"{where}[{index}].weight must be 0 or 1 and only on assistant messages"
        has_assistant = has_assistant or role == "assistant"
    if need_assistant and not has_assistant:
        return f"{where} must contain at least one assistant message"
    return None


def _check_example(record: Any, method_type: str) -> str | None:
    if not isinstance(record, dict):
        return "each line must be a JSON object"
    if method_type == "dpo":
        inp = record.get("input")
        if not isinstance(inp, dict):
            return "missing 'input' object (preference format needs input, preferred_output, non_preferred_output)"
        problem = _check_message_list(inp.get("messages"), "input.messages", need_assistant=False)
        if problem:
            return problem
        if inp["messages"][-1].get("role") == "assistant":
            return "the last input message must not be from the assistant"
        for key in ("preferred_output", "non_preferred_output"):
            output = record.get(key)
            if not (isinstance(output, list) and len(output) == 1 and isinstance(output[0], dict)
                    and output[0].get("role") == "assistant"):
                return f"'{key}' must be a list with exactly one assistant message"
        return None
    if "messages" not in record:
        return "missing 'messages' (chat format expects {\"messages\": [...]})"
    return _check_message_list(record.get("messages"), "messages", need_assistant=True)


class OpenAIEmulator:
    organization_id = "org-emulator000000000000000"
    organization_slug = "emulator-org"

    def __init__(self, *, api_key: str = "test-openai-key", step_seconds: float = 0.2) -> None:
        self.api_key = api_key
        self.step_seconds = step_seconds
        self.router = RoutedEmulator(error_body=_error_body, check_auth=self._check_auth)
        self.faults = self.router.faults
        self.requests = self.router.requests
        self.lock = self.router.lock
        self.files: dict[str, StoredFile] = {}
        self.jobs: dict[str, EmulatedJob] = {}
        self.images: dict[str, bytes] = {}
        self._routes()
        self.app = self.router.build_app()

    # ------------------------------------------------------------------ test helpers

    def fail_job(self, job_id: str, message: str = "Fine-tuning failed: internal error.",
                 code: str = "server_error", param: str | None = None) -> None:
        """Force a job into `failed` with an OpenAI-shaped `error` object."""
        with self.lock:
            job = self.jobs[job_id]
            self._advance(job)
            job.stage = "failed"
            job.paused_at = None
            job.error = {"code": code, "message": message, "param": param}
            job.finished_at = int(time.time())
            self._event(job, message, level="error")

    def job_status(self, job_id: str) -> str:
        with self.lock:
            job = self.jobs[job_id]
            self._advance(job)
            return job.status

    # ------------------------------------------------------------------ plumbing

    def _check_auth(self, request: EmulatorRequest) -> EmulatorError | None:
        key = bearer_key(request)
        if key is None:
            return EmulatorError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
                "username) if you're accessing the API from your browser and are prompted for a username and "
                "password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
            )
        if key != self.api_key:
            return EmulatorError(
                401,
                f"Incorrect API key provided: {masked_key(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def _routes(self) -> None:
        add = self.router.add
        add("POST", r"/v1/files", self._create_file)
        add("GET", r"/v1/files", self._list_files)
        add("GET", r"/v1/files/(?P<file_id>[^/]+)", self._get_file)
        add("DELETE", r"/v1/files/(?P<file_id>[^/]+)", self._delete_file)
        add("GET", r"/v1/files/(?P<file_id>[^/]+)/content", self._file_content)
        add("POST", r"/v1/fine_tuning/jobs", self._create_job)
        add("GET", r"/v1/fine_tuning/jobs", self._list_jobs)
        add("GET", r"/v1/fine_tuning/jobs/(?P<job_id>[^/]+)", self._get_job)
        add("POST", r"/v1/fine_tuning/jobs/(?P<job_id>[^/]+)/cancel", self._cancel_job)
        add("POST", r"/v1/fine_tuning/jobs/(?P<job_id>[^/]+)/pause", self._pause_job)
        add("POST", r"/v1/fine_tuning/jobs/(?P<job_id>[^/]+)/resume", self._resume_job)
        add("GET", r"/v1/fine_tuning/jobs/(?P<job_id>[^/]+)/events", self._list_events)
        add("GET", r"/v1/fine_tuning/jobs/(?P<job_id>[^/]+)/checkpoints", self._list_checkpoints)
        add("POST", r"/v1/chat/completions", self._chat)
        add("POST", r"/v1/embeddings", self._embeddings)
        add("GET", r"/v1/models", self._list_models)
        add("GET", r"/v1/models/(?P<model>[^/]+)", self._get_model)
        add("POST", r"/v1/images/generations", self._generate_images)
        add("GET", r"/v1/emulator-images/(?P<image_id>[^/]+)\.png", self._image_file)
        add("POST", r"/v1/audio/transcriptions", self._transcribe)
        add("POST", r"/v1/audio/translations", self._translate)

    # ------------------------------------------------------------------ files

    def _file(self, file_id: str) -> StoredFile:
        stored = self.files.get(file_id)
        if stored is None:
            raise EmulatorError(404, f"No such File object: {file_id}", param="id")
        return stored

    async def _create_file(self, request: EmulatorRequest) -> Response[Any]:
        fields, files = await request.form()
        purpose = fields.get("purpose")
        if purpose not in FILE_PURPOSES:
            raise EmulatorError(
                400, f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'", param="purpose",
            )
        if "file" not in files:
            raise EmulatorError(400, "Missing required parameter: 'file'.", param="file")
        filename, content = files["file"]
        if purpose == "fine-tune":
            if not filename.endswith(".jsonl"):
                raise EmulatorError(
                    400, "Invalid file format for Fine-Tuning API. Must be .jsonl", param="file",
                    code="invalid_file_format",
                )
            self._check_jsonl(content)
        stored = StoredFile(random_id("file-", 22), filename, purpose, content, int(time.time()))
        with self.lock:
            self.files[stored.id] = stored
        return json_response(stored.body())

    @staticmethod
    def _check_jsonl(content: bytes) -> list[Any]:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise EmulatorError(400, "Invalid file format: the file is not UTF-8 encoded.",
                                param="file", code="invalid_file_format") from None
        records = []
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                raise EmulatorError(
                    400, f"Invalid file format. Line {number} is not valid JSON.", param="file",
                    code="invalid_file_format",
                ) from None
        return records

    async def _list_files(self, request: EmulatorRequest) -> Response[Any]:
        limit = request.int_arg("limit", 10000, maximum=10000)
        order = request.arg("order", "desc")
        purpose = request.arg("purpose")
        after = request.arg("after")
        if order not in ("asc", "desc"):
            raise EmulatorError(400, f"Invalid 'order': {order!r}; expected 'asc' or 'desc'.", param="order")
        with self.lock:
            items = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
        if order == "desc":
            items.reverse()
        if after:
            ids = [f.id for f in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page, more = items[:limit], len(items) > limit
        return json_response({
            "object": "list", "data": [f.body() for f in page],
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
            "has_more": more,
        })

    async def _get_file(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            return json_response(self._file(request.params["file_id"]).body())

    async def _delete_file(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            stored = self._file(request.params["file_id"])
            del self.files[stored.id]
        return json_response({"id": stored.id, "object": "file", "deleted": True})

    async def _file_content(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            stored = self._file(request.params["file_id"])
        return Response(content=stored.content, media_type="application/octet-stream")

    # ------------------------------------------------------------------ jobs

    def _job(self, job_id: str) -> EmulatedJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise EmulatorError(404, f"Could not find fine tune: {job_id}", param="fine_tune_id",
                                code="fine_tune_not_found")
        self._advance(job)
        return job

    def _elapsed(self, job: EmulatedJob) -> float:
        now = job.paused_at if job.paused_at is not None else time.monotonic()
        return now - job.created_mono - job.paused_total

    def _event(self, job: EmulatedJob, message: str, *, level: str = "info", offset_steps: float | None = None,
               type_: str = "message", data: dict[str, Any] | None = None) -> None:
        created = job.created_at
        if offset_steps is not None:
            created += int(offset_steps * self.step_seconds + job.paused_total)
        else:
            created = max(created, int(time.time()))
        job.events.append({
            "object": "fine_tuning.job.event", "id": random_id("ftevent-"), "created_at": created,
            "level": level, "message": message, "data": data if data is not None else {}, "type": type_,
        })

    def _advance(self, job: EmulatedJob) -> None:
        """Catch the job up with the clock, emitting the events it would have emitted."""
        if job.stage in ("cancelled", "failed", "succeeded"):
            return
        point = timeline_at(self._elapsed(job), self.step_seconds)
        target = ORDER.index(point.stage)
        while True:
            if job.stage == "validating" and target > 0:
                job.stage = "queued"
                self._event(job, "Files validated, moving job to queued state", offset_steps=1)
            elif job.stage == "queued" and target > 1:
                job.stage = "running"
                self._event(job, "Fine-tuning job started", offset_steps=2)
            elif job.stage == "running" and job.step < (point.step if target == 2 else RUNNING_STEPS):
                job.step += 1
                self._record_step(job)
            elif job.stage == "running" and target == 3:
                self._succeed(job)
            else:
                return

    def _record_step(self, job: EmulatedJob) -> None:
        k = job.step
        total = job.total_steps
        step = max(1, round(total * k / RUNNING_STEPS))
        loss = simulated_loss(k)
        accuracy = round(min(1.0, 0.5 + 0.12 * k), 4)
        data: dict[str, Any] = {
            "step": step, "train_loss": loss, "total_steps": total, "train_mean_token_accuracy": accuracy,
        }
        if job.validation_file:
            data["valid_loss"] = round(loss + 0.05, 4)
            data["valid_mean_token_accuracy"] = round(accuracy - 0.02, 4)
        self._event(job, f"Step {step}/{total}: training loss={loss:.4f}", offset_steps=2 + k,
                    type_="metrics", data=data)
        if k in (RUNNING_STEPS // 2, RUNNING_STEPS):
            metrics: dict[str, Any] = {"step": float(step), "train_loss": loss, "train_mean_token_accuracy": accuracy}
            if job.validation_file:
                valid_loss, valid_accuracy = data["valid_loss"], data["valid_mean_token_accuracy"]
                metrics.update(
                    valid_loss=valid_loss, valid_mean_token_accuracy=valid_accuracy,
                    full_valid_loss=valid_loss, full_valid_mean_token_accuracy=valid_accuracy,
                )
            job.checkpoints.append({
                "object": "fine_tuning.job.checkpoint", "id": random_id("ftckpt_"),
                "created_at": job.created_at + int((2 + k) * self.step_seconds + job.paused_total),
                "fine_tuned_model_checkpoint": f"{job.planned_model}:ckpt-step-{step}",
                "step_number": step, "fine_tuning_job_id": job.id, "metrics": metrics,
            })
            self._event(job, f"Checkpoint created at step {step}", offset_steps=2 + k)

    def _succeed(self, job: EmulatedJob) -> None:
        offset = 2 + RUNNING_STEPS
        job.stage = "succeeded"
        job.fine_tuned_model = job.planned_model
        job.trained_tokens = job.training_tokens * int(job.hyperparameters["n_epochs"])
        job.finished_at = job.created_at + int(offset * self.step_seconds + job.paused_total)
        rows = ["step,train_loss,train_accuracy"] + [
            f"{e['data']['step']},{e['data']['train_loss']},{e['data']['train_mean_token_accuracy']}"
            for e in job.events if e["type"] == "metrics"
        ]
        results = StoredFile(random_id("file-", 22), "step_metrics.csv", "fine-tune-results",
                             ("\n".join(rows) + "\n").encode(), job.finished_at)
        self.files[results.id] = results
        job.result_files = [results.id]
        self._event(job, f"New fine-tuned model created: {job.planned_model}", offset_steps=offset)
        self._event(job, "Evaluating model against our usage policies", offset_steps=offset)
        self._event(job, "Usage policy evaluations completed, model is now enabled for sampling",
                    offset_steps=offset)
        self._event(job, "The job has successfully completed", offset_steps=offset)

    def _base_model_ok(self, model: str) -> bool:
        if model in FINE_TUNABLE_MODELS:
            return True
        return any(j.fine_tuned_model == model for j in self.jobs.values())

    def _training_records(self, file_id: Any, param: str, method_type: str) -> list[Any]:
        if not isinstance(file_id, str) or not file_id:
            raise EmulatorError(400, f"Missing required parameter: '{param}'.", param=param)
        stored = self.files.get(file_id)
        if stored is None:
            raise EmulatorError(400, f"invalid {param}: {file_id}", param=param, code=f"invalid_{param}")
        if stored.purpose != "fine-tune":
            raise EmulatorError(400, f"File {file_id} has purpose '{stored.purpose}', but fine-tuning needs "
                                     "a file uploaded with purpose 'fine-tune'.", param=param, code=f"invalid_{param}")
        records = self._check_jsonl(stored.content)
        for number, record in enumerate(records, start=1):
            problem = _check_example(record, method_type)
            if problem:
                raise EmulatorError(
                    400, f"Invalid file format. Line {number}: {problem}.", param=param, code=f"invalid_{param}",
                )
        return records

    async def _create_job(self, request: EmulatorRequest) -> Response[Any]:
        body = await request.json_object()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise EmulatorError(400, "Missing required parameter: 'model'.", param="model")
        method = body.get("method") or {"type": "supervised"}
        method_type = method.get("type") if isinstance(method, dict) else None
        if method_type not in ("supervised", "dpo"):
            raise EmulatorError(400, f"Invalid value for 'method.type': {method_type!r}. The emulator supports "
                                     "'supervised' and 'dpo'.", param="method.type")
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or not 1 <= len(suffix) <= 64):
            raise EmulatorError(400, "Invalid 'suffix': string must be 1 to 64 characters.", param="suffix")
        metadata = body.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict) or len(metadata) > 16
            or not all(isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                       for k, v in metadata.items())
        ):
            raise EmulatorError(400, "Invalid 'metadata': up to 16 string pairs (keys <= 64, values <= 512 chars).",
                                param="metadata")
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or not 0 <= seed <= 2147483647):
            raise EmulatorError(400, "Invalid 'seed': must be an integer between 0 and 2147483647.", param="seed")
        hyper = self._hyperparameters(body, method, method_type)
        with self.lock:
            if not self._base_model_ok(model):
                raise EmulatorError(400, f"Model {model} is not available for fine-tuning or does not exist.",
                                    param="model", code="model_not_available")
            if method_type == "dpo" and model not in DPO_MODELS:
                raise EmulatorError(400, f"Model {model} does not support the dpo method.", param="model",
                                    code="model_not_available")
            records = self._training_records(body.get("training_file"), "training_file", method_type)
            if len(records) < MIN_EXAMPLES:
                raise EmulatorError(
                    400, f"Training file has {len(records)} example(s), but must have at least {MIN_EXAMPLES} "
                         "examples", param="training_file", code="invalid_n_examples",
                )
            validation_file = body.get("validation_file") or None
            if validation_file is not None:
                self._training_records(validation_file, "validation_file", method_type)
            job_id = random_id("ftjob-")
            base = model.split(":")[1] if model.startswith("ft:") else model
            job = EmulatedJob(
                id=job_id, model=model, training_file=body["training_file"], validation_file=validation_file,
                suffix=suffix, seed=seed if seed is not None else int(time.time()) % 2147483647,
                metadata=metadata, method_type=method_type, hyperparameters=hyper,
                created_at=int(time.time()), created_mono=time.monotonic(),
                planned_model=f"ft:{base}:{self.organization_slug}:{suffix or ''}:{job_id[-8:]}",
                responder=NearestNeighbourResponder.train(records),
                training_tokens=sum(count_tokens(json.dumps(r)) for r in records), examples=len(records),
            )
            self._event(job, f"Created fine-tuning job: {job_id}", offset_steps=0)
            self._event(job, f"Validating training file: {job.training_file}"
                             + (f" and validation file: {validation_file}" if validation_file else ""),
                        offset_steps=0)
            self.jobs[job_id] = job
            return json_response(job.body(self.step_seconds))

    @staticmethod
    def _hyperparameters(body: dict[str, Any], method: dict[str, Any], method_type: str) -> dict[str, Any]:
        given: dict[str, Any] = dict(body.get("hyperparameters") or {})
        section = method.get(method_type) or {}
        given.update((section.get("hyperparameters") or {}) if isinstance(section, dict) else {})
        rules: dict[str, tuple[type | tuple[type, ...], float, float, Any]] = {
            "n_epochs": (int, 1, 50, 3),
            "batch_size": (int, 1, 256, 1),
            "learning_rate_multiplier": ((int, float), 0, float("inf"), 2.0),
        }
        if method_type == "dpo":
            rules["beta"] = ((int, float), 0, 2, 0.1)
        resolved: dict[str, Any] = {}
        for name, (kind, low, high, auto) in rules.items():
            value = given.pop(name, "auto")
            if value == "auto" or value is None:
                resolved[name] = auto
                continue
            ok = isinstance(value, kind) and not isinstance(value, bool)
            if ok and name in ("learning_rate_multiplier", "beta"):
                ok = low < value <= high
            elif ok:
                ok = low <= value <= high
            if not ok:
                raise EmulatorError(400, f"Invalid value for '{name}': {value!r}.", param=f"hyperparameters.{name}",
                                    code="invalid_value")
            resolved[name] = value
        if given:
            raise EmulatorError(400, f"Unknown hyperparameter(s): {', '.join(sorted(given))}.",
                                param="hyperparameters")
        return resolved

    async def _list_jobs(self, request: EmulatorRequest) -> Response[Any]:
        limit = request.int_arg("limit", 20, maximum=100)
        after = request.arg("after")
        wanted = {k[len("metadata["):-1]: v for k, v in request.query if k.startswith("metadata[") and k.endswith("]")}
        null_metadata = request.arg("metadata") == "null"
        with self.lock:
            items = list(reversed(self.jobs.values()))
            for job in items:
                self._advance(job)
            if wanted:
                items = [j for j in items if j.metadata and all(j.metadata.get(k) == v for k, v in wanted.items())]
            if null_metadata:
                items = [j for j in items if not j.metadata]
            if after:
                ids = [j.id for j in items]
                items = items[ids.index(after) + 1:] if after in ids else []
            page = items[:limit]
            return json_response({
                "object": "list", "data": [j.body(self.step_seconds) for j in page], "has_more": len(items) > limit,
            })

    async def _get_job(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            return json_response(self._job(request.params["job_id"]).body(self.step_seconds))

    async def _cancel_job(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            job = self._job(request.params["job_id"])
            if job.finished:
                raise EmulatorError(400, f"Job {job.id} has already {job.status} and cannot be cancelled.",
                                    param="fine_tune_id")
            job.stage = "cancelled"
            job.paused_at = None
            job.finished_at = int(time.time())
            self._event(job, "Fine-tuning job cancelled")
            return json_response(job.body(self.step_seconds))

    async def _pause_job(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            job = self._job(request.params["job_id"])
            if job.status != "running":
                raise EmulatorError(400, f"Only running jobs can be paused; job {job.id} is {job.status}.",
                                    param="fine_tune_id")
            job.paused_at = time.monotonic()
            self._event(job, "Fine-tuning job paused")
            return json_response(job.body(self.step_seconds))

    async def _resume_job(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            job = self._job(request.params["job_id"])
            if job.paused_at is None:
                raise EmulatorError(400, f"Only paused jobs can be resumed; job {job.id} is {job.status}.",
                                    param="fine_tune_id")
            job.paused_total += time.monotonic() - job.paused_at
            job.paused_at = None
            self._event(job, "Fine-tuning job resumed")
            return json_response(job.body(self.step_seconds))

    @staticmethod
    def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        if after:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return items[:limit], len(items) > limit

    async def _list_events(self, request: EmulatorRequest) -> Response[Any]:
        limit = request.int_arg("limit", 20, maximum=1000)
        with self.lock:
            job = self._job(request.params["job_id"])
            page, more = self._page(list(reversed(job.events)), request.arg("after"), limit)
            return json_response({"object": "list", "data": page, "has_more": more})

    async def _list_checkpoints(self, request: EmulatorRequest) -> Response[Any]:
        limit = request.int_arg("limit", 10, maximum=1000)
        with self.lock:
            job = self._job(request.params["job_id"])
            page, more = self._page(list(reversed(job.checkpoints)), request.arg("after"), limit)
            return json_response({
                "object": "list", "data": page, "has_more": more,
                "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
            })

    # ------------------------------------------------------------------ inference

    def _responder_for(self, model: str) -> NearestNeighbourResponder | None:
        for job in self.jobs.values():
            self._advance(job)
            if job.fine_tuned_model == model:
                return job.responder
            if any(c["fine_tuned_model_checkpoint"] == model for c in job.checkpoints):
                return job.responder
        return None

    def _model_not_found(self, model: str) -> EmulatorError:
        return EmulatorError(404, f"The model `{model}` does not exist or you do not have access to it.",
                             code="model_not_found")

    async def _chat(self, request: EmulatorRequest) -> Any:
        body = await request.json_object()
        messages = validate_chat_body(body)
        model = str(body["model"])
        with self.lock:
            responder = self._responder_for(model)
        if responder is not None:
            answer = responder.answer(messages) or ""
        elif model in FINE_TUNABLE_MODELS or model in CHAT_ALIASES:
            last_user = next((content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
                             "")
            answer = f"This is the emulated base model {model}; it was asked: {last_user}"
        else:
            raise self._model_not_found(model)
        return chat_answer_response(body, model, answer, messages)

    async def _embeddings(self, request: EmulatorRequest) -> Response[Any]:
        body = await request.json_object()
        model = body.get("model")
        if model not in EMBEDDING_MODELS:
            raise self._model_not_found(str(model))
        dimensions = body.get("dimensions") or EMBEDDING_MODELS[str(model)]
        if not isinstance(dimensions, int) or not 1 <= dimensions <= EMBEDDING_MODELS[str(model)]:
            raise EmulatorError(400, "Invalid 'dimensions'.", param="dimensions")
        if body.get("dimensions") is not None and model == "text-embedding-ada-002":
            raise EmulatorError(400, "This model does not support specifying dimensions.", param="dimensions")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise EmulatorError(400, "Invalid 'encoding_format'.", param="encoding_format")
        return json_response(embeddings_body(str(model), embedding_inputs(body), dimensions=dimensions,
                                             encoding_format=encoding))

    def _models(self) -> list[dict[str, Any]]:
        created = 1_700_000_000
        out = [{"id": m, "object": "model", "created": created, "owned_by": "system"}
               for m in (*FINE_TUNABLE_MODELS, *CHAT_ALIASES, *EMBEDDING_MODELS)]
        for job in self.jobs.values():
            self._advance(job)
            for checkpoint in job.checkpoints:
                out.append({"id": checkpoint["fine_tuned_model_checkpoint"], "object": "model",
                            "created": checkpoint["created_at"], "owned_by": self.organization_slug})
            if job.fine_tuned_model:
                out.append({"id": job.fine_tuned_model, "object": "model", "created": job.finished_at or created,
                            "owned_by": self.organization_slug})
        return out

    async def _list_models(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            return json_response({"object": "list", "data": self._models()})

    async def _get_model(self, request: EmulatorRequest) -> Response[Any]:
        model = request.params["model"]
        with self.lock:
            for item in self._models():
                if item["id"] == model:
                    return json_response(item)
        raise self._model_not_found(model)


    # ------------------------------------------------------------------ images and audio

    async def _generate_images(self, request: EmulatorRequest) -> Response[Any]:
        body = await request.json_object()
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise EmulatorError(400, "Missing required parameter: 'prompt'.", param="prompt")
        model = body.get("model") or "dall-e-2"
        if model not in IMAGE_SIZES:
            raise EmulatorError(400, f"Invalid value for 'model': {model!r}.", param="model",
                                code="invalid_value")
        gpt_image = model.startswith("gpt-image")
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 10 or (model == "dall-e-3" and n != 1):
            raise EmulatorError(400, f"Invalid 'n' for {model}: {n!r}.", param="n")
        size = body.get("size") or ("auto" if gpt_image else "1024x1024")
        if size not in IMAGE_SIZES[model]:
            raise EmulatorError(400, f"Invalid value: '{size}'. Supported values are: "
                                + ", ".join(f"'{v}'" for v in IMAGE_SIZES[model]) + ".", param="size",
                                code="invalid_value")
        response_format = body.get("response_format")
        if response_format is not None and (gpt_image or response_format not in ("url", "b64_json")):
            raise EmulatorError(400, f"Unknown parameter or value: 'response_format' = {response_format!r}.",
                                param="response_format")
        width, height = (1024, 1024) if size == "auto" else (int(v) for v in size.split("x"))
        data: list[dict[str, Any]] = []
        for index in range(n):
            png = emulated_png(f"{model}: {prompt}", width // 4, height // 4, index)
            if gpt_image or response_format == "b64_json":
                item: dict[str, Any] = {"b64_json": base64.b64encode(png).decode()}
            else:
                image_id = random_id("img-", 16)
                with self.lock:
                    self.images[image_id] = png
                host = request.raw.headers.get("host", "127.0.0.1")
                item = {"url": f"http://{host}/v1/emulator-images/{image_id}.png"}
            if model == "dall-e-3":
                item["revised_prompt"] = f"An emulated picture of {prompt}"
            data.append(item)
        out: dict[str, Any] = {"created": int(time.time()), "data": data}
        if gpt_image:
            tokens = count_tokens(prompt)
            out.update(output_format="png", size=f"{width}x{height}", quality="medium", background="opaque",
                       usage={"total_tokens": tokens + 272 * n, "input_tokens": tokens, "output_tokens": 272 * n,
                              "input_tokens_details": {"text_tokens": tokens, "image_tokens": 0}})
        return json_response(out)

    async def _image_file(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            png = self.images.get(request.params["image_id"])
        if png is None:
            raise EmulatorError(404, "No such image.")
        return Response(content=png, media_type="image/png")

    async def _audio(self, request: EmulatorRequest, task: str) -> Response[Any]:
        fields, files = await request.form()
        if "file" not in files:
            raise EmulatorError(400, "Missing required parameter: 'file'.", param="file")
        model = fields.get("model")
        if not model:
            raise EmulatorError(400, "Missing required parameter: 'model'.", param="model")
        allowed = TRANSCRIBE_MODELS if task == "transcribe" else ("whisper-1",)
        if model not in allowed:
            raise EmulatorError(400, f"Invalid model {model!r} for this endpoint; use one of {list(allowed)}.",
                                param="model", code="invalid_value")
        filename, content = files["file"]
        extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if extension not in AUDIO_EXTENSIONS:
            raise EmulatorError(400, f"Invalid file format. Supported formats: {list(AUDIO_EXTENSIONS)}",
                                param="file", code="invalid_value")
        response_format = fields.get("response_format") or "json"
        if response_format not in AUDIO_FORMATS or (model != "whisper-1" and response_format != "json"):
            raise EmulatorError(400, f"response_format {response_format!r} is not compatible with {model}.",
                                param="response_format", code="unsupported_value")
        if task == "translate" and "language" in fields:
            raise EmulatorError(400, "Unrecognized request argument supplied: language", param="language")
        text, seconds = spoken_text(content)
        if task == "translate":
            text = f"(translated to English) {text}"
        body = transcript_body(text, seconds, response_format, task="translate" if task == "translate" else
                               "transcribe", language="english" if task == "translate" else
                               fields.get("language") or "english")
        if isinstance(body, str):
            return Response(content=body.encode(), media_type="text/plain")
        return json_response(body)

    async def _transcribe(self, request: EmulatorRequest) -> Response[Any]:
        return await self._audio(request, "transcribe")

    async def _translate(self, request: EmulatorRequest) -> Response[Any]:
        return await self._audio(request, "translate")


def create_openai_emulator(*, api_key: str = "test-openai-key", step_seconds: float = 0.2) -> OpenAIEmulator:
    """An OpenAI emulator; serve `emulator.app` with `tests.emulators.server.serve_in_thread`."""
    return OpenAIEmulator(api_key=api_key, step_seconds=step_seconds)
