"""A loopback emulator of Fireworks AI's REST API (datasets, SFT jobs, models, inference).

Contract: `shared/specs/PROVIDERS.md` §3. Control plane under `/v1/accounts/{a}/...` answers
grpc-gateway style errors `{"code": <grpc int>, "message", "details": []}`; inference under
`/inference/v1/...` (and `/v1/...`, which the SDK uses when base_url is overridden) answers
OpenAI-style errors. Resource ids are the last segment of `name`; `{id}:verb` custom methods
(`:upload`, `:cancel`) are routed as such. A fine-tuned `accounts/{a}/models/{outputModel}`
answers from the sandbox nearest-neighbour responder over the job's dataset.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    random_id,
    validate_chat_body,
)

BASE_MODELS: dict[str, dict[str, Any]] = {
    "llama-v3p1-8b-instruct": {"displayName": "Llama 3.1 8B Instruct", "contextLength": 131072},
    "llama-v3p2-3b-instruct": {"displayName": "Llama 3.2 3B Instruct", "contextLength": 131072},
    "qwen3-8b": {"displayName": "Qwen3 8B", "contextLength": 40960},
    "qwen2p5-7b-instruct": {"displayName": "Qwen2.5 7B Instruct", "contextLength": 32768},
}
EMBEDDING_MODELS = {"nomic-ai/nomic-embed-text-v1.5": 768, "fireworks/qwen3-embedding-8b": 4096}
MIN_EXAMPLES = 3
_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_GRPC = {400: (3, "INVALID_ARGUMENT"), 401: (16, "UNAUTHENTICATED"), 403: (7, "PERMISSION_DENIED"),
         404: (5, "NOT_FOUND"), 409: (6, "ALREADY_EXISTS"), 412: (9, "FAILED_PRECONDITION"),
         429: (8, "RESOURCE_EXHAUSTED"), 500: (13, "INTERNAL"), 503: (14, "UNAVAILABLE")}
# grpc code for an HTTP status when a handler needs a specific one (FAILED_PRECONDITION is HTTP 400).
FAILED_PRECONDITION = "FAILED_PRECONDITION"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_inference(path: str) -> bool:
    return path.startswith("/inference/") or not path.startswith("/v1/accounts/")


def _error_body(path: str, error: EmulatorError) -> dict[str, Any]:
    if _is_inference(path):
        body: dict[str, Any] = {"object": "error", "type": error.type, "message": error.message}
        if error.code:
            body["code"] = error.code
        return {"error": body}
    if error.code == FAILED_PRECONDITION:
        code = 9
    else:
        code = _GRPC.get(error.status, (13 if error.status >= 500 else 2, ""))[0]
    return {"code": code, "message": error.message, "details": []}


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _page_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "offset":
            return int(value)
    except ValueError:
        pass
    raise EmulatorError(400, f"invalid page token {token!r}")


@dataclass
class EmulatedDataset:
    id: str
    account: str
    display_name: str
    format: str
    declared_count: int | None
    create_time: float
    update_time: float
    state: str = "UPLOADING"
    content: bytes = b""
    filename: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"accounts/{self.account}/datasets/{self.id}"

    def body(self) -> dict[str, Any]:
        count = len(self.records) if self.state == "READY" else self.declared_count
        body: dict[str, Any] = {
            "name": self.name, "displayName": self.display_name, "createTime": rfc3339(self.create_time),
            "updateTime": rfc3339(self.update_time), "state": self.state, "status": {"code": "OK", "message": ""},
            "format": self.format, "userUploaded": {}, "createdBy": "emulator@example.com",
        }
        if count is not None:
            body["exampleCount"] = str(count)
        if self.state == "READY":
            body["estimatedTokenCount"] = str(sum(count_tokens(json.dumps(r)) for r in self.records))
        return body


@dataclass
class EmulatedSftJob:
    id: str
    account: str
    body_in: dict[str, Any]
    dataset: str
    base_model: str
    output_model: str
    create_time: float
    created_mono: float
    responder: NearestNeighbourResponder
    tokens: int
    forced_state: str | None = None
    status: dict[str, str] = field(default_factory=lambda: {"code": "OK", "message": ""})
    completed_time: float | None = None
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return f"accounts/{self.account}/supervisedFineTuningJobs/{self.id}"

    @property
    def output_model_name(self) -> str:
        return f"accounts/{self.account}/models/{self.output_model}"


class FireworksEmulator:
    def __init__(self, *, api_key: str = "test-fireworks-key", account_id: str = "test-account",
                 step_seconds: float = 0.2) -> None:
        self.api_key = api_key
        self.account_id = account_id
        self.step_seconds = step_seconds
        self.router = RoutedEmulator(error_body=_error_body, check_auth=self._check_auth)
        self.faults = self.router.faults
        self.requests = self.router.requests
        self.lock = self.router.lock
        self.datasets: dict[str, EmulatedDataset] = {}
        self.jobs: dict[str, EmulatedSftJob] = {}
        self._routes()
        self.app = self.router.build_app()

    # ------------------------------------------------------------------ test helpers

    def fail_job(self, job_id: str, message: str = "Training failed: internal error.") -> None:
        with self.lock:
            job = self.jobs[job_id]
            job.forced_state = "JOB_STATE_FAILED"
            job.status = {"code": "INTERNAL", "message": message}
            job.completed_time = job.update_time = time.time()

    def job_state(self, job_id: str) -> str:
        with self.lock:
            return self._state(self.jobs[job_id])[0]

    # ------------------------------------------------------------------ plumbing

    def _check_auth(self, request: EmulatorRequest) -> EmulatorError | None:
        key = bearer_key(request)
        if key != self.api_key:
            if _is_inference(request.path):
                return EmulatorError(401, "The API key you provided is invalid.", type="authentication_error")
            return EmulatorError(401, "unauthenticated: invalid API key")
        account = request.params.get("account")
        if account is not None and account not in (self.account_id, "fireworks"):
            return EmulatorError(403, f"permission denied: the API key cannot access account {account!r}")
        return None

    def _routes(self) -> None:
        add = self.router.add
        acct = r"/v1/accounts/(?P<account>[^/]+)"
        add("POST", acct + r"/datasets", self._create_dataset)
        add("GET", acct + r"/datasets", self._list_datasets)
        add("GET", acct + r"/datasets/(?P<dataset>[^/:]+)", self._get_dataset)
        add("DELETE", acct + r"/datasets/(?P<dataset>[^/:]+)", self._delete_dataset)
        add("POST", acct + r"/datasets/(?P<dataset>[^/:]+):upload", self._upload_dataset)
        add("POST", acct + r"/supervisedFineTuningJobs", self._create_job)
        add("GET", acct + r"/supervisedFineTuningJobs", self._list_jobs)
        add("GET", acct + r"/supervisedFineTuningJobs/(?P<job>[^/:]+)", self._get_job)
        add("DELETE", acct + r"/supervisedFineTuningJobs/(?P<job>[^/:]+)", self._delete_job)
        add("POST", acct + r"/supervisedFineTuningJobs/(?P<job>[^/:]+):cancel", self._cancel_job)
        add("GET", acct + r"/models", self._list_models)
        for prefix in ("/inference/v1", "/v1"):
            add("POST", prefix + r"/chat/completions", self._chat)
            add("POST", prefix + r"/embeddings", self._embeddings)

    # ------------------------------------------------------------------ datasets

    def _dataset(self, account: str, dataset_id: str) -> EmulatedDataset:
        dataset = self.datasets.get(dataset_id)
        if dataset is None or dataset.account != account:
            raise EmulatorError(404, f'Dataset "accounts/{account}/datasets/{dataset_id}" not found')
        return dataset

    async def _create_dataset(self, request: EmulatorRequest) -> Response[Any]:
        body = await request.json_object()
        account = request.params["account"]
        dataset_id = body.get("datasetId")
        spec = body.get("dataset")
        if not isinstance(dataset_id, str) or not _ID.match(dataset_id):
            raise EmulatorError(400, "invalid datasetId: must match [a-z][a-z0-9-]{0,62}")
        if not isinstance(spec, dict):
            raise EmulatorError(400, "missing field: dataset")
        fmt = spec.get("format", "CHAT")
        if fmt not in ("FORMAT_UNSPECIFIED", "CHAT", "COMPLETION", "RL"):
            raise EmulatorError(400, f"invalid dataset.format {fmt!r}")
        declared = spec.get("exampleCount")
        try:
            count = None if declared is None else int(declared)
        except (TypeError, ValueError):
            raise EmulatorError(400, "dataset.exampleCount must be an int64 string") from None
        now = time.time()
        with self.lock:
            if dataset_id in self.datasets:
                raise EmulatorError(409, f'Dataset "accounts/{account}/datasets/{dataset_id}" already exists')
            dataset = EmulatedDataset(dataset_id, account, str(spec.get("displayName") or dataset_id), fmt, count,
                                      now, now)
            self.datasets[dataset_id] = dataset
            return json_response(dataset.body())

    async def _get_dataset(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            return json_response(self._dataset(request.params["account"], request.params["dataset"]).body())

    async def _delete_dataset(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            dataset = self._dataset(request.params["account"], request.params["dataset"])
            del self.datasets[dataset.id]
        return json_response({})

    async def _list_datasets(self, request: EmulatorRequest) -> Response[Any]:
        size = request.int_arg("pageSize", 50, maximum=200)
        offset = _page_offset(request.arg("pageToken"))
        with self.lock:
            items = [d for d in self.datasets.values() if d.account == request.params["account"]]
            return json_response(self._paged("datasets", [d.body() for d in items], offset, size))

    @staticmethod
    def _paged(key: str, items: list[dict[str, Any]], offset: int, size: int) -> dict[str, Any]:
        page = items[offset:offset + size]
        body: dict[str, Any] = {key: page, "totalSize": len(items)}
        if offset + size < len(items):
            body["nextPageToken"] = _page_token(offset + size)
        return body

    async def _upload_dataset(self, request: EmulatorRequest) -> Response[Any]:
        _, files = await request.form()
        if "file" not in files:
            raise EmulatorError(400, "multipart field 'file' is required")
        filename, content = files["file"]
        with self.lock:
            dataset = self._dataset(request.params["account"], request.params["dataset"])
        records = []
        for number, line in enumerate(content.decode("utf-8", errors="replace").split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise EmulatorError(400, f"invalid JSONL: line {number} is not valid JSON") from None
            problem = self._check_example(record, dataset.format)
            if problem:
                raise EmulatorError(400, f"invalid dataset: line {number}: {problem}")
            records.append(record)
        with self.lock:
            dataset.content, dataset.filename, dataset.records = content, filename, records
            dataset.state = "READY"
            dataset.update_time = time.time()
        return json_response({"id": dataset.id, "object": "file", "bytes": len(content),
                              "created_at": int(time.time()), "filename": filename, "purpose": "fine-tune"})

    @staticmethod
    def _check_example(record: Any, fmt: str) -> str | None:
        if not isinstance(record, dict):
            return "each line must be a JSON object"
        if fmt == "COMPLETION":
            if not isinstance(record.get("prompt"), str) or not isinstance(record.get("completion"), str):
                return "completion format needs string 'prompt' and 'completion'"
            return None
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty list"
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "tool"):
                return f"messages[{index}].role must be system, user, assistant or tool"
            if message["role"] == "system" and index != 0:
                return "a system message may only come first"
            if message.get("weight") not in (None, 0, 1):
                return f"messages[{index}].weight must be 0 or 1"
        if not any(m.get("role") == "assistant" for m in messages):
            return "at least one assistant message is required"
        return None

    # ------------------------------------------------------------------ jobs

    def _state(self, job: EmulatedSftJob) -> tuple[str, float, int]:
        """(JOB_STATE_*, percent, completed steps) at this moment."""
        if job.forced_state is not None:
            return job.forced_state, 100.0 if job.forced_state == "JOB_STATE_COMPLETED" else 0.0, 0
        point = timeline_at(time.monotonic() - job.created_mono, self.step_seconds)
        state = {"validating": "JOB_STATE_VALIDATING", "queued": "JOB_STATE_PENDING",
                 "running": "JOB_STATE_RUNNING", "succeeded": "JOB_STATE_COMPLETED"}[point.stage]
        if state == "JOB_STATE_COMPLETED" and job.completed_time is None:
            job.completed_time = job.create_time + self.step_seconds * (2 + RUNNING_STEPS)
            job.update_time = job.completed_time
        return state, point.progress, point.step

    def _job(self, account: str, job_id: str) -> EmulatedSftJob:
        job = self.jobs.get(job_id)
        if job is None or job.account != account:
            raise EmulatorError(404, f'SupervisedFineTuningJob "accounts/{account}/supervisedFineTuningJobs/'
                                     f'{job_id}" not found')
        return job

    def _job_body(self, job: EmulatedSftJob) -> dict[str, Any]:
        state, percent, step = self._state(job)
        epochs = int(job.body_in.get("epochs") or 1)
        body: dict[str, Any] = {
            key: value for key, value in job.body_in.items()
            if key in ("displayName", "epochs", "learningRate", "learningRateWarmupSteps", "loraRank",
                       "maxContextLength", "batchSize", "batchSizeSamples", "gradientAccumulationSteps",
                       "optimizerWeightDecay", "earlyStop", "evaluationDataset", "evalAutoCarveout", "isTurbo",
                       "region", "wandbConfig")
        }
        progress: dict[str, Any] = {
            "percent": round(percent), "epoch": min(epochs, 1 + step * epochs // RUNNING_STEPS) if step else 0,
            "inputTokens": str(job.tokens * epochs * step // RUNNING_STEPS),
        }
        if step:
            progress["trainLoss"] = simulated_loss(step)
        body.update({
            "name": job.name, "createTime": rfc3339(job.create_time),
            "updateTime": rfc3339(job.update_time or job.create_time), "createdBy": "emulator@example.com",
            "dataset": job.dataset, "baseModel": job.base_model, "outputModel": job.output_model_name,
            "state": state, "status": dict(job.status),
            "jobProgress": progress,
            "estimatedCost": {"currencyCode": "USD", "units": "0", "nanos": 500_000_000},
        })
        body.setdefault("epochs", epochs)
        body.setdefault("learningRate", 0.0001)
        body.setdefault("loraRank", 8)
        body.setdefault("maxContextLength", BASE_MODELS.get(job.base_model.rsplit("/", 1)[-1], {})
                        .get("contextLength", 8192))
        if job.completed_time is not None and state in ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED",
                                                         "JOB_STATE_CANCELLED"):
            body["completedTime"] = rfc3339(job.completed_time)
        return body

    async def _create_job(self, request: EmulatorRequest) -> Response[Any]:
        account = request.params["account"]
        body = await request.json_object()
        job_id = request.arg("supervisedFineTuningJobId") or random_id("", 12, "abcdefghijklmnopqrstuvwxyz0123456789")
        if not _ID.match(job_id):
            job_id = "j" + job_id[1:] if job_id[:1].isdigit() else job_id
        if not _ID.match(job_id):
            raise EmulatorError(400, f"invalid supervisedFineTuningJobId {job_id!r}: must match [a-z][a-z0-9-]{{0,62}}")
        dataset_name = body.get("dataset")
        if not isinstance(dataset_name, str) or not dataset_name:
            raise EmulatorError(400, "missing field: dataset")
        base_model, warm_start = body.get("baseModel"), body.get("warmStartFrom")
        if bool(base_model) == bool(warm_start):
            raise EmulatorError(400, "exactly one of baseModel or warmStartFrom must be set")
        for name, low, high in (("epochs", 1, 100), ("loraRank", 1, 64), ("learningRate", 0, 1)):
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not low <= value <= high):
                raise EmulatorError(400, f"invalid {name}: {value!r}")
        with self.lock:
            if job_id in self.jobs:
                raise EmulatorError(409, f'SupervisedFineTuningJob "accounts/{account}/supervisedFineTuningJobs/'
                                         f'{job_id}" already exists')
            match = re.fullmatch(r"accounts/([^/]+)/datasets/([^/]+)", dataset_name)
            if match is None:
                raise EmulatorError(400, f"invalid dataset name {dataset_name!r}")
            dataset = self._dataset(match.group(1), match.group(2))
            if dataset.state != "READY":
                raise EmulatorError(400, f'Dataset "{dataset.name}" is not ready (state {dataset.state})',
                                    code=FAILED_PRECONDITION)
            if len(dataset.records) < MIN_EXAMPLES:
                raise EmulatorError(400, f"dataset has {len(dataset.records)} examples; at least {MIN_EXAMPLES} "
                                         "are required")
            model = str(base_model or warm_start)
            if base_model:
                short = re.fullmatch(r"accounts/fireworks/models/([^/]+)", model)
                if short is None or short.group(1) not in BASE_MODELS:
                    raise EmulatorError(404, f'Model "{model}" not found or not tunable')
            elif not any(j.output_model_name == model for j in self.jobs.values()):
                raise EmulatorError(404, f'Model "{model}" not found')
            output = str(body.get("outputModel") or job_id).rsplit("/", 1)[-1]
            if any(j.output_model == output for j in self.jobs.values()):
                raise EmulatorError(409, f'Model "accounts/{account}/models/{output}" already exists')
            now = time.time()
            job = EmulatedSftJob(
                id=job_id, account=account, body_in=body, dataset=dataset.name, base_model=model,
                output_model=output, create_time=now, created_mono=time.monotonic(),
                responder=NearestNeighbourResponder.train(dataset.records),
                tokens=sum(count_tokens(json.dumps(r)) for r in dataset.records), update_time=now,
            )
            self.jobs[job_id] = job
            return json_response(self._job_body(job))

    async def _get_job(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            return json_response(self._job_body(self._job(request.params["account"], request.params["job"])))

    async def _list_jobs(self, request: EmulatorRequest) -> Response[Any]:
        size = request.int_arg("pageSize", 50, maximum=200)
        offset = _page_offset(request.arg("pageToken"))
        with self.lock:
            items = [self._job_body(j) for j in self.jobs.values() if j.account == request.params["account"]]
            return json_response(self._paged("supervisedFineTuningJobs", items, offset, size))

    async def _delete_job(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            job = self._job(request.params["account"], request.params["job"])
            del self.jobs[job.id]
        return json_response({})

    async def _cancel_job(self, request: EmulatorRequest) -> Response[Any]:
        with self.lock:
            job = self._job(request.params["account"], request.params["job"])
            state = self._state(job)[0]
            if state in ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
                raise EmulatorError(400, f"job is already in terminal state {state}", code=FAILED_PRECONDITION)
            job.forced_state = "JOB_STATE_CANCELLED"
            job.status = {"code": "CANCELLED", "message": "Job was cancelled by the user."}
            job.completed_time = job.update_time = time.time()
        return json_response({})

    # ------------------------------------------------------------------ models and inference

    def _model_body(self, name: str, info: dict[str, Any], kind: str) -> dict[str, Any]:
        return {"name": name, "displayName": info.get("displayName", name.rsplit("/", 1)[-1]), "kind": kind,
                "state": "READY", "contextLength": info.get("contextLength", 8192), "tunable": kind == "HF_BASE_MODEL",
                "supportsLora": True, "createTime": rfc3339(info.get("created", 1_700_000_000)),
                **({"peftDetails": {"baseModel": info["base"]}} if "base" in info else {})}

    async def _list_models(self, request: EmulatorRequest) -> Response[Any]:
        account = request.params["account"]
        size = request.int_arg("pageSize", 50, maximum=200)
        offset = _page_offset(request.arg("pageToken"))
        with self.lock:
            if account == "fireworks":
                items = [self._model_body(f"accounts/fireworks/models/{mid}", info, "HF_BASE_MODEL")
                         for mid, info in BASE_MODELS.items()]
            else:
                items = [
                    self._model_body(j.output_model_name, {"base": j.base_model, "created": j.completed_time or 0},
                                     "HF_PEFT_ADDON")
                    for j in self.jobs.values()
                    if j.account == account and self._state(j)[0] == "JOB_STATE_COMPLETED"
                ]
            return json_response(self._paged("models", items, offset, size))

    def _responder_for(self, model: str) -> NearestNeighbourResponder | None:
        name = model.split("#", 1)[0]
        for job in self.jobs.values():
            if job.output_model_name == name and self._state(job)[0] == "JOB_STATE_COMPLETED":
                return job.responder
        return None

    async def _chat(self, request: EmulatorRequest) -> Any:
        body = await request.json_object()
        messages = validate_chat_body(body)
        model = str(body["model"])
        with self.lock:
            responder = self._responder_for(model)
        if responder is not None:
            answer = responder.answer(messages) or ""
        elif model.startswith("accounts/fireworks/models/") and model.rsplit("/", 1)[-1] in BASE_MODELS:
            last_user = next((content_text(m.get("content")) for m in reversed(messages)
                              if m.get("role") == "user"), "")
            answer = f"This is the emulated base model {model}; it was asked: {last_user}"
        else:
            raise EmulatorError(404, "Model not found, inaccessible, and/or not deployed", code="NOT_FOUND")
        return chat_answer_response(body, model, answer, messages, usage_on_final_chunk=True)

    async def _embeddings(self, request: EmulatorRequest) -> Response[Any]:
        body = await request.json_object()
        model = str(body.get("model"))
        short = model.removeprefix("accounts/fireworks/models/")
        if short not in EMBEDDING_MODELS:
            raise EmulatorError(404, "Model not found, inaccessible, and/or not deployed", code="NOT_FOUND")
        dims = body.get("dimensions") or EMBEDDING_MODELS[short]
        encoding = body.get("encoding_format") or "float"
        return json_response(embeddings_body(model, embedding_inputs(body), dimensions=int(dims),
                                             encoding_format=encoding))


def create_fireworks_emulator(*, api_key: str = "test-fireworks-key", account_id: str = "test-account",
                              step_seconds: float = 0.2) -> FireworksEmulator:
    """A Fireworks emulator; serve `emulator.app` with `tests.emulators.server.serve_in_thread`."""
    return FireworksEmulator(api_key=api_key, account_id=account_id, step_seconds=step_seconds)
