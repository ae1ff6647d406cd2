"""Evaluations of a Sandbox fine-tune: real metrics, progress, JSONL results, tenancy and bad input."""

from __future__ import annotations

import asyncio
import difflib
import json
from datetime import timedelta
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from finetune_service.app import create_app
from finetune_service.db.engine import Database
from finetune_service.db.tables import Evaluation, utcnow
from finetune_service.services.evaluations import INTERRUPTED, STALE_BEATS, exact_match, similarity, token_f1
from finetune_service.settings import Settings
from tests.api.helpers import SAMPLE, upload
from tests.api.test_completions import JOBS, finished_job, script_sandbox
from tests.conftest import AUTH_A, AUTH_B


async def wait_done(client: AsyncTestClient[Litestar], job_id: str, evaluation_id: str,
                    headers: dict[str, str] = AUTH_A) -> dict[str, Any]:
    seen_progress: set[float] = set()
    for _ in range(200):
        response = await client.get(f"{JOBS}/{job_id}/evaluations/{evaluation_id}", headers=headers)
        assert response.status_code == 200, response.text
        evaluation = response.json()["evaluation"]
        seen_progress.add(evaluation["progress"])
        if evaluation["status"] in ("succeeded", "failed"):
            return dict(evaluation)
        await asyncio.sleep(0.05)
    raise AssertionError(f"evaluation stayed {evaluation['status']} (progress seen: {sorted(seen_progress)})")


async def results(client: AsyncTestClient[Litestar], evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.get(evaluation["results_url"], headers=AUTH_A)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.split("\n") if line]


def test_metric_definitions() -> None:
    assert exact_match("  Yes,\n  we do. ", "Yes, we do.") == 1.0
    assert exact_match("yes, we do.", "Yes, we do.") == 0.0
    assert token_f1("the cat sat", "the cat sat") == 1.0
    # answer tokens {a, b, c}, expected {a, b, d, e}: precision 2/3, recall 2/4 -> F1 4/7
    assert abs(token_f1("a b c", "a b d e") - 4 / 7) < 1e-9
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    assert similarity("Hello  World", "hello world") == 1.0
    assert abs(similarity("abcd", "abxd") - difflib.SequenceMatcher(None, "abcd", "abxd").ratio()) < 1e-9


async def test_exact_match_on_the_training_split_is_perfect(client: AsyncTestClient[Litestar]) -> None:
    job = await finished_job(client)
    response = await client.post(f"{JOBS}/{job['id']}/evaluations", json={"split_name": "train", "concurrency": 3},
                                 headers=AUTH_A)
    assert response.status_code == 202, response.text
    started = response.json()["evaluation"]
    assert started["status"] in ("queued", "running", "succeeded") and started["total"] == 22
    done = await wait_done(client, job["id"], started["id"])
    assert done["status"] == "succeeded", done
    assert done["done"] == done["total"] == 22 and done["failed"] == 0 and done["progress"] == 100.0
    assert done["metrics"]["fine_tuned"] == {"exact_match": 1.0, "token_f1": 1.0, "similarity": 1.0, "answered": 22}
    assert "base" not in done["metrics"]
    rows = await results(client, done)
    assert [r["row"] for r in rows] == list(range(22))
    assert all(r["answer"] == r["expected"] and r["error"] is None for r in rows)
    assert rows[0]["messages"][-1]["role"] == "user" and "base_answer" not in rows[0]


async def test_test_split_gives_real_metrics_and_compares_with_the_base_model(
    client: AsyncTestClient[Litestar],
) -> None:
    job = await finished_job(client)
    response = await client.post(f"{JOBS}/{job['id']}/evaluations", json={"compare_base": True}, headers=AUTH_A)
    assert response.status_code == 202, response.text
    done = await wait_done(client, job["id"], response.json()["evaluation"]["id"])
    assert done["status"] == "succeeded" and done["split_name"] == "test" and done["total"] == 5
    assert done["base_model"] == "sandbox-chat-small"
    rows = await results(client, done)
    assert len(rows) == 5
    for which, answer_key, scores_key in (("fine_tuned", "answer", "scores"), ("base", "base_answer", "base_scores")):
        summary = done["metrics"][which]
        assert summary["answered"] == 5
        for name, metric in (("exact_match", exact_match), ("token_f1", token_f1), ("similarity", similarity)):
            # Every row's score is the metric of its answer, and the summary is their mean.
            per_row = [metric(r[answer_key], r["expected"]) for r in rows]
            assert [r[scores_key][name] for r in rows] == [round(v, 6) if name != "exact_match" else v
                                                          for v in per_row]
            assert abs(summary[name] - sum(per_row) / 5) < 1e-4
            assert 0.0 <= summary[name] <= 1.0
    # None of the held-out questions is in the training file, so the nearest neighbour misses some...
    assert done["metrics"]["fine_tuned"]["exact_match"] < 1.0
    # ...and the untuned base model (it repeats the system prompt) matches none of them.
    assert done["metrics"]["base"]["exact_match"] == 0.0
    # The base model really was asked: the untuned Sandbox answers with the row's system prompt.
    assert all(r["base_answer"] == r["messages"][0]["content"] for r in rows)
    assert all(r["answer"] != r["base_answer"] for r in rows)
    listed = (await client.get(f"{JOBS}/{job['id']}/evaluations", headers=AUTH_A)).json()["evaluations"]
    assert [e["id"] for e in listed] == [done["id"]]


async def test_another_uploaded_dataset_is_evaluated_whole(client: AsyncTestClient[Litestar]) -> None:
    job = await finished_job(client)
    uploaded = await upload(client, SAMPLE / "support_qa.parquet")
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()["path"]
    response = await client.post(f"{JOBS}/{job['id']}/evaluations", json={"dataset_path": dataset, "limit": 28},
                                 headers=AUTH_A)
    assert response.status_code == 202, response.text
    done = await wait_done(client, job["id"], response.json()["evaluation"]["id"])
    assert done["status"] == "succeeded" and done["split_name"] == "all" and done["dataset_path"] == dataset
    assert done["total"] == done["done"] == 28
    # The same 30 rows as the CSV, 22 of which were trained on: at least those are exact.
    rows = await results(client, done)
    exact = sum(r["scores"]["exact_match"] for r in rows)
    assert exact >= 20 and abs(done["metrics"]["fine_tuned"]["exact_match"] - exact / 28) < 1e-4


async def test_evaluations_are_private_to_their_tenant(client: AsyncTestClient[Litestar]) -> None:
    job = await finished_job(client)
    created = await client.post(f"{JOBS}/{job['id']}/evaluations", json={"split_name": "val"}, headers=AUTH_A)
    evaluation = created.json()["evaluation"]
    await wait_done(client, job["id"], evaluation["id"])
    base = f"{JOBS}/{job['id']}/evaluations"
    for method, path in (("post", base), ("get", base), ("get", f"{base}/{evaluation['id']}"),
                         ("get", f"{base}/{evaluation['id']}/results")):
        kwargs: dict[str, Any] = {"json": {}} if method == "post" else {}
        response = await getattr(client, method)(path, headers=AUTH_B, **kwargs)
        assert response.status_code == 404, (method, path, response.text)
        assert evaluation["id"] not in response.text or method == "get"
    other_job = await finished_job(client)
    misplaced = await client.get(f"{JOBS}/{other_job['id']}/evaluations/{evaluation['id']}", headers=AUTH_A)
    assert misplaced.status_code == 404


async def test_bad_evaluation_requests_get_clear_4xx(client: AsyncTestClient[Litestar]) -> None:
    job = await finished_job(client)
    path = f"{JOBS}/{job['id']}/evaluations"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"concurrency": 0}, 422, "concurrency"),
        ({"concurrency": 500}, 422, "concurrency"),
        ({"limit": 0}, 422, "limit"),
        ({"temperature": 3}, 422, "temperature"),
        ({"max_tokens": 0}, 422, "max_tokens"),
        ({"split_name": "holdout"}, 422, "holdout"),
        ({"dataset_path": "ds_doesnotexist"}, 404, "ds_doesnotexist"),
        ({"dataset_path": "../../etc/passwd"}, 404, "does not exist"),
        ({"metric": "bleu"}, 400, "metric"),
    ]
    for body, status, words in cases:
        response = await client.post(path, json=body, headers=AUTH_A)
        assert response.status_code == status, (body, response.text)
        assert words in response.text, (body, response.text)
    assert (await client.get(path, headers=AUTH_A)).json()["evaluations"] == []
    missing = await client.get(f"{path}/eval_nope", headers=AUTH_A)
    assert missing.status_code == 404 and "eval_nope" in missing.json()["detail"]
    failed = await finished_job(client, parameters={"fail_with": "no GPUs"})
    conflict = await client.post(f"{JOBS}/{failed['id']}/evaluations", json={}, headers=AUTH_A)
    assert conflict.status_code == 409 and "no fine-tuned model" in conflict.json()["detail"]


async def test_progress_is_recorded_while_running_with_bounded_concurrency(
    app: Litestar, client: AsyncTestClient[Litestar],
) -> None:
    job = await finished_job(client)
    app.state.services.evaluations.flush_rows = 1
    scripted = script_sandbox(app, reply_delay=0.03)
    response = await client.post(f"{JOBS}/{job['id']}/evaluations", json={"split_name": "train", "concurrency": 2},
                                 headers=AUTH_A)
    evaluation_id = response.json()["evaluation"]["id"]
    partial: list[int] = []
    for _ in range(200):
        current = (await client.get(f"{JOBS}/{job['id']}/evaluations/{evaluation_id}", headers=AUTH_A)).json()
        if current["evaluation"]["status"] == "succeeded":
            break
        partial.append(current["evaluation"]["done"])
        await asyncio.sleep(0.02)
    assert any(0 < done < 22 for done in partial), partial  # progress moved while the run was going
    assert partial == sorted(partial)
    assert scripted.replies == 22 and scripted.max_in_flight == 2  # the semaphore held it to 2 at a time
    midway = await client.get(f"{JOBS}/{job['id']}/evaluations/{evaluation_id}/results", headers=AUTH_A)
    assert len(midway.text.splitlines()) == 22


async def test_stopping_the_service_marks_a_running_evaluation_failed(settings: Settings) -> None:
    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        job = await finished_job(client)
        scripted = script_sandbox(app, reply_delay=0.5)
        response = await client.post(f"{JOBS}/{job['id']}/evaluations",
                                     json={"split_name": "train", "concurrency": 1}, headers=AUTH_A)
        evaluation_id = response.json()["evaluation"]["id"]
        await asyncio.sleep(0.1)
    # Leaving the block ran the shutdown lifespan while the evaluation was mid-run.
    assert scripted.replies < 22
    async with AsyncTestClient(create_app(settings)) as restarted:
        stopped = (await restarted.get(f"{JOBS}/{job['id']}/evaluations/{evaluation_id}", headers=AUTH_A)).json()
    assert stopped["evaluation"]["status"] == "failed"
    assert "stopped before the evaluation finished" in stopped["evaluation"]["error"]
    assert stopped["evaluation"]["finished_at"] is not None


async def test_an_evaluation_whose_runner_died_is_reported_failed(settings: Settings) -> None:
    """kill -9 leaves a `running` record nobody updates any more; a live run keeps beating."""
    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        job = await finished_job(client)
        created = await client.post(f"{JOBS}/{job['id']}/evaluations", json={"split_name": "train"}, headers=AUTH_A)
        done = await wait_done(client, job["id"], created.json()["evaluation"]["id"])
        heartbeat = app.state.services.evaluations.heartbeat_seconds
        ages = {"dead": timedelta(seconds=heartbeat * STALE_BEATS + 5), "alive": timedelta(seconds=heartbeat)}
        database = Database(settings.database_url)  # the app's engine lives on the test client's loop
        try:
            async with database.session() as session:
                template = await session.get(Evaluation, done["id"])
                assert template is not None
                for name, age in ages.items():
                    session.add(Evaluation(**{**template.model_dump(), "id": f"eval_{name}", "status": "running",
                                              "finished_at": None, "error": None, "updated_at": utcnow() - age}))
        finally:
            await database.dispose()
        base = f"{JOBS}/{job['id']}/evaluations"
        dead = (await client.get(f"{base}/eval_dead", headers=AUTH_A)).json()["evaluation"]
        assert (dead["status"], dead["error"]) == ("failed", INTERRUPTED) and dead["finished_at"]
        listed = {e["id"]: e["status"] for e in (await client.get(base, headers=AUTH_A)).json()["evaluations"]}
        assert listed == {"eval_dead": "failed", "eval_alive": "running", done["id"]: "succeeded"}
        assert (await client.get(f"{base}/eval_alive", headers=AUTH_A)).json()["evaluation"]["status"] == "running"
