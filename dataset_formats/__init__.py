"""Pure, streaming dataset conversion for fine-tuning: read CSV/TSV/Parquet/JSONL/JSON in Arrow
batches, map columns to chat roles, build provider JSONL lines, split, validate, write atomically.

Imports nothing from ``finetune_service``.
"""
