from __future__ import annotations

import json

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from finetune_service.settings import Settings
from tests.api.helpers import SAMPLE, upload, uploaded_id
from tests.conftest import AUTH_A, AUTH_B


async def test_upload_csv_returns_id_and_validation_report(client: AsyncTestClient[Litestar]) -> None:
    response = await upload(client)
    assert response.status_code == 201
    body = response.json()
    assert body["filename"] == "support_qa.csv"
    assert body["path"].startswith("ds_")
    assert body["dataset"]["row_count"] == 30
    assert body["dataset"]["mapping"]["user"] == "question"
    assert body["dataset"]["mapping"]["thinking"] == "reasoning"
    assert body["report"]["row_count"] == 30


@pytest.mark.parametrize("name", ["support_qa.parquet", "support_chat.jsonl", "preferences.csv"])
async def test_upload_other_types(client: AsyncTestClient[Litestar], name: str) -> None:
    response = await upload(client, SAMPLE / name)
    assert response.status_code == 201, response.text
    assert response.json()["dataset"]["row_count"] > 0


async def test_client_path_is_reduced_to_base_name(client: AsyncTestClient[Litestar]) -> None:
    response = await upload(client, filename="C:\\Users\\me\\..\\data\\../../etc/support.csv")
    assert response.status_code == 201
    assert response.json()["filename"] == "support.csv"


async def test_unsupported_type_is_415(client: AsyncTestClient[Litestar]) -> None:
    response = await upload(client, content=b"hello", filename="notes.txt")
    assert response.status_code == 415
    assert ".csv" in response.json()["detail"]


async def test_malformed_csv_is_422_with_location(client: AsyncTestClient[Litestar]) -> None:
    response = await upload(client, content=b'question,answer\n"unterminated,quote\nx,y\n', filename="bad.csv")
    assert response.status_code == 422
    assert "line" in response.json()["detail"] or "row" in response.json()["detail"]


async def test_malformed_jsonl_names_the_line(client: AsyncTestClient[Litestar]) -> None:
    content = b'{"prompt": "a", "completion": "b"}\n[1, 2]\n'
    response = await upload(client, content=content, filename="bad.jsonl")
    assert response.status_code == 422
    assert "line 2" in response.json()["detail"]


async def test_empty_file_is_422(client: AsyncTestClient[Litestar]) -> None:
    response = await upload(client, content=b"", filename="empty.csv")
    assert response.status_code == 422
    assert "empty" in response.json()["detail"]


async def test_missing_file_field_is_clear(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/api/finetune/upload-dataset", data={"description": "x"}, headers=AUTH_A)
    assert response.status_code in (400, 422)
    assert "file" in response.json()["detail"]


async def test_oversized_upload_is_413_and_leaves_nothing(settings: Settings) -> None:
    from dataclasses import replace

    from finetune_service.app import create_app

    small = replace(settings, max_upload_bytes=2000)
    async with AsyncTestClient(create_app(small)) as client:
        response = await upload(client)
        assert response.status_code == 413
        assert (await client.get("/api/finetune/datasets", headers=AUTH_A)).json()["datasets"] == []
    leftovers = [p for p in small.datasets_dir.rglob("*") if p.is_file()]
    assert leftovers == []


async def test_format_then_download_output(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    response = await client.post("/api/finetune/format-dataset", json={
        "dataset_path": dataset, "split_name": "all", "data_strategy": "final_and_intermediate_r1_compatible",
    }, headers=AUTH_A)
    assert response.status_code == 200, response.text
    output = response.json()["output"]
    assert output["rows_written"] == 30 - output["error_count"]
    download = await client.get(f"/api/finetune/outputs/{response.json()['output_path']}", headers=AUTH_A)
    assert download.status_code == 200
    lines = download.text.split("\n")[:-1]
    assert len(lines) == output["rows_written"]
    first = json.loads(lines[0])
    assert first["messages"][-1]["content"].startswith("<think>\n")


async def test_identical_format_request_reuses_output(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    body = {"dataset_path": dataset, "split_name": "test"}
    first = await client.post("/api/finetune/format-dataset", json=body, headers=AUTH_A)
    second = await client.post("/api/finetune/format-dataset", json=body, headers=AUTH_A)
    assert first.json()["output_path"] == second.json()["output_path"]


async def test_download_dataset_with_seed_defaults(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    train = await client.get("/api/finetune/download-dataset", params={"dataset_path": dataset}, headers=AUTH_A)
    everything = await client.get(
        "/api/finetune/download-dataset", params={"dataset_path": dataset, "split_name": "all"}, headers=AUTH_A
    )
    assert train.status_code == everything.status_code == 200
    assert "attachment" in train.headers["content-disposition"]
    assert "support_qa-train-openai_chat_jsonl.jsonl" in train.headers["content-disposition"]
    train_lines = train.text.splitlines()
    all_lines = everything.text.splitlines()
    assert 0 < len(train_lines) < len(all_lines) == 30
    assert set(train_lines) <= set(all_lines)
    assert json.loads(train_lines[0])["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}


async def test_splits_partition_the_rows(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    seen: list[str] = []
    for split in ("train", "test", "validation"):
        response = await client.get(
            "/api/finetune/download-dataset", params={"dataset_path": dataset, "split_name": split}, headers=AUTH_A
        )
        assert response.status_code == 200, response.text
        seen += response.text.splitlines()
    assert len(seen) == len(set(seen)) == 30


async def test_bad_split_and_options_are_422(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    bad_split = await client.post("/api/finetune/format-dataset",
                                  json={"dataset_path": dataset, "split_name": "holdout"}, headers=AUTH_A)
    assert bad_split.status_code == 422
    assert "holdout" in bad_split.json()["detail"] and "train" in bad_split.json()["detail"]
    bad_format = await client.post("/api/finetune/format-dataset",
                                   json={"dataset_path": dataset, "format_type": "csv"}, headers=AUTH_A)
    assert bad_format.status_code == 422
    assert "openai_chat_jsonl" in bad_format.json()["detail"]
    incompatible = await client.post("/api/finetune/format-dataset", json={
        "dataset_path": dataset, "format_type": "openai_chat_json_schema_jsonl",
        "data_strategy": "final_and_intermediate_r1_compatible"}, headers=AUTH_A)
    assert incompatible.status_code == 422
    wasted = await client.post("/api/finetune/format-dataset", json={
        "dataset_path": dataset, "thinking_instructions": "think", "data_strategy": "final_only"}, headers=AUTH_A)
    assert wasted.status_code == 422


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "/etc/passwd", "ds_../../x", "%2e%2e%2fsecret", ""])
async def test_hostile_dataset_path_never_reads_a_file(client: AsyncTestClient[Litestar], hostile: str) -> None:
    response = await client.post("/api/finetune/format-dataset", json={"dataset_path": hostile}, headers=AUTH_A)
    assert response.status_code == 404
    assert "root:" not in response.text
    download = await client.get("/api/finetune/download-dataset", params={"dataset_path": hostile}, headers=AUTH_A)
    assert download.status_code == 404


async def test_other_tenant_sees_nothing(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    assert (await client.get(f"/api/finetune/datasets/{dataset}", headers=AUTH_B)).status_code == 404
    assert (await client.delete(f"/api/finetune/datasets/{dataset}", headers=AUTH_B)).status_code == 404
    formatted = await client.post("/api/finetune/format-dataset", json={"dataset_path": dataset}, headers=AUTH_B)
    assert formatted.status_code == 404
    assert (await client.get("/api/finetune/datasets", headers=AUTH_B)).json()["datasets"] == []
    mine = await client.post("/api/finetune/format-dataset", json={"dataset_path": dataset}, headers=AUTH_A)
    output = mine.json()["output_path"]
    assert (await client.get(f"/api/finetune/outputs/{output}", headers=AUTH_B)).status_code == 404


async def test_delete_removes_record_and_files(client: AsyncTestClient[Litestar], settings: Settings) -> None:
    dataset = await uploaded_id(client)
    await client.post("/api/finetune/format-dataset", json={"dataset_path": dataset}, headers=AUTH_A)
    assert any(settings.datasets_dir.rglob(f"{dataset}/*"))
    response = await client.delete(f"/api/finetune/datasets/{dataset}", headers=AUTH_A)
    assert response.status_code == 200
    assert (await client.get(f"/api/finetune/datasets/{dataset}", headers=AUTH_A)).status_code == 404
    assert not any(settings.datasets_dir.rglob(f"{dataset}"))


async def test_format_types_are_listed_with_examples(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/finetune/format-types", headers=AUTH_A)
    assert response.status_code == 200
    body = response.json()
    ids = {f["id"] for f in body["format_types"]}
    assert {"openai_chat_jsonl", "vertex_gemini", "dpo_preference_jsonl", "together_instruction_jsonl"} <= ids
    assert "two_message_cot" in body["data_strategies"]
    assert body["split_presets"]["train_test_val_80"] == {"train": 0.8, "test": 0.1, "val": 0.1}
