from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.api.helpers import uploaded_id
from tests.conftest import AUTH_A, AUTH_B

BASE = "/api/finetune"


async def make_task(client: AsyncTestClient[Litestar]) -> tuple[str, str]:
    project = (await client.post(f"{BASE}/projects", json={"name": "Support"}, headers=AUTH_A)).json()["project"]
    task = (await client.post(f"{BASE}/projects/{project['id']}/tasks", json={"name": "Answer tickets"},
                              headers=AUTH_A)).json()["task"]
    return project["id"], task["id"]


async def test_project_and_task_crud(client: AsyncTestClient[Litestar]) -> None:
    project_id, task_id = await make_task(client)
    assert [p["id"] for p in (await client.get(f"{BASE}/projects", headers=AUTH_A)).json()["projects"]] == [project_id]
    tasks = (await client.get(f"{BASE}/projects/{project_id}/tasks", headers=AUTH_A)).json()["tasks"]
    assert [t["id"] for t in tasks] == [task_id]
    assert (await client.get(f"{BASE}/projects/{project_id}", headers=AUTH_B)).status_code == 404
    assert (await client.get(f"{BASE}/projects/{project_id}/tasks/{task_id}", headers=AUTH_B)).status_code == 404
    empty = await client.post(f"{BASE}/projects", json={"name": "  "}, headers=AUTH_A)
    assert empty.status_code == 422 and "name must not be empty" in empty.json()["detail"]
    assert (await client.delete(f"{BASE}/projects/{project_id}/tasks/{task_id}", headers=AUTH_A)).status_code == 200
    assert (await client.get(f"{BASE}/projects/{project_id}/tasks/{task_id}", headers=AUTH_A)).status_code == 404
    assert (await client.delete(f"{BASE}/projects/{project_id}", headers=AUTH_A)).status_code == 200
    assert (await client.get(f"{BASE}/projects/{project_id}", headers=AUTH_A)).status_code == 404


async def test_dataset_split_is_stored_and_downloadable(client: AsyncTestClient[Litestar]) -> None:
    project_id, task_id = await make_task(client)
    dataset = await uploaded_id(client)
    task = f"{BASE}/projects/{project_id}/tasks/{task_id}"
    created = await client.post(f"{task}/dataset_splits", json={
        "dataset_path": dataset, "name": "v1", "split_preset": "train_test", "seed": 7}, headers=AUTH_A)
    assert created.status_code == 201, created.text
    split = created.json()["dataset_split"]
    assert split["definition"]["ratios"] == {"train": 0.8, "test": 0.2} and split["definition"]["seed"] == 7
    assert sum(split["counts"].values()) == 30
    listed = (await client.get(f"{task}/dataset_splits", headers=AUTH_A)).json()["dataset_splits"]
    assert [s["id"] for s in listed] == [split["id"]]
    lines = {}
    for part in ("train", "test"):
        response = await client.get(f"{BASE}/download_dataset_jsonl", params={
            "project_id": project_id, "task_id": task_id, "dataset_id": split["id"], "split_name": part,
            "custom_system_message": "You answer support tickets."}, headers=AUTH_A)
        assert response.status_code == 200, response.text
        lines[part] = response.text.splitlines()
        assert '"content":"You answer support tickets."' in lines[part][0]
    assert len(lines["train"]) == split["counts"]["train"] and len(lines["test"]) == split["counts"]["test"]
    other = await client.get(f"{BASE}/download_dataset_jsonl", params={
        "project_id": project_id, "task_id": task_id, "dataset_id": split["id"]}, headers=AUTH_B)
    assert other.status_code == 404


async def test_finetunes_live_inside_their_task(client: AsyncTestClient[Litestar]) -> None:
    project_id, task_id = await make_task(client)
    _, other_task = await make_task(client)
    dataset = await uploaded_id(client)
    task = f"{BASE}/projects/{project_id}/tasks/{task_id}"
    created = await client.post(f"{task}/finetunes", json={
        "name": "ft", "provider": "SANDBOX", "model_name": "sandbox-chat-small", "dataset_path": dataset},
        headers=AUTH_A)
    assert created.status_code == 201, created.text
    job = created.json()["job"]
    assert (job["project_id"], job["task_id"]) == (project_id, task_id)
    listed = (await client.get(f"{task}/finetunes", headers=AUTH_A)).json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    assert (await client.get(f"{task}/finetunes/{job['id']}", headers=AUTH_A)).status_code == 200
    wrong = f"{BASE}/projects/{project_id}/tasks/{other_task}/finetunes/{job['id']}"
    assert (await client.get(wrong, headers=AUTH_A)).status_code == 404
    assert (await client.post(f"{wrong}/cancel", headers=AUTH_A)).status_code == 404
    cancelled = await client.post(f"{task}/finetunes/{job['id']}/cancel", headers=AUTH_A)
    assert cancelled.status_code == 200 and cancelled.json()["job"]["status"] in ("cancelled", "succeeded")
    assert (await client.post(f"{task}/finetunes", json={}, headers=AUTH_B)).status_code in (400, 404)


@pytest.mark.parametrize("deleted", ["task", "project", "dataset"])
async def test_a_job_shows_what_it_points_at_being_deleted(client: AsyncTestClient[Litestar], deleted: str) -> None:
    """The database unlinks the job itself (ON DELETE SET NULL); a poll must not keep the old link."""
    project_id, task_id = await make_task(client)
    dataset = await uploaded_id(client)
    task = f"{BASE}/projects/{project_id}/tasks/{task_id}"
    job = (await client.post(f"{task}/finetunes", json={
        "name": "ft", "provider": "SANDBOX", "model_name": "sandbox-chat-small", "dataset_path": dataset},
        headers=AUTH_A)).json()["job"]
    before = await client.get(f"{BASE}/jobs/{job['id']}", headers=AUTH_A)
    listed = await client.get(f"{BASE}/jobs", headers=AUTH_A)
    target = {"task": task, "project": f"{BASE}/projects/{project_id}", "dataset": f"{BASE}/datasets/{dataset}"}
    assert (await client.delete(target[deleted], headers=AUTH_A)).status_code == 200
    after = await client.get(f"{BASE}/jobs/{job['id']}", headers={**AUTH_A, "If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    field = {"task": "task_id", "project": "project_id", "dataset": "dataset_path"}[deleted]
    assert before.json()["job"][field] is not None and after.json()["job"][field] is None
    relisted = await client.get(f"{BASE}/jobs", headers={**AUTH_A, "If-None-Match": listed.headers["etag"]})
    assert relisted.status_code == 200 and relisted.json()["jobs"][0][field] is None
