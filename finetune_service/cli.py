"""Command line: serve, migrate, keys create (and the data team's convert)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from finetune_service.auth import KeyStore
from finetune_service.db.engine import Database
from finetune_service.db.migrate import upgrade
from finetune_service.errors import ConfigurationError
from finetune_service.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _migrated_key_store(settings: Settings) -> tuple[Database, KeyStore]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    await upgrade(database)
    store = KeyStore(database, settings.api_keys)
    await store.refresh_mode()
    return database, store


async def _open_mode(settings: Settings) -> bool:
    database, store = await _migrated_key_store(settings)
    await database.dispose()
    return store.open_mode


def serve(settings: Settings, host: str, port: int, workers: int = 1) -> int:
    import uvicorn

    from finetune_service.access_log import uvicorn_log_config
    from finetune_service.app import served_asgi

    if workers < 1:
        print(f"--workers must be at least 1, got {workers}", file=sys.stderr)
        return 2
    if asyncio.run(_open_mode(settings)) and not is_loopback(host):
        print(
            f"Refusing to listen on {host}: no API key is configured, so anyone who can reach this "
            "address could use the service. Set FINETUNE_API_KEYS=tenant:key or run "
            "'finetune-service keys create --tenant NAME', or bind to 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    if workers > 1:
        # Each worker process builds its app from the same environment; the migrations ran above,
        # and the scheduler's leases keep the workers from syncing the same job twice.
        uvicorn.run("finetune_service.app:served_asgi", factory=True, workers=workers, host=host, port=port,
                    proxy_headers=False, log_config=uvicorn_log_config())
    else:
        uvicorn.run(served_asgi(settings), host=host, port=port, proxy_headers=False, log_config=uvicorn_log_config())
    return 0


def migrate(settings: Settings) -> int:
    async def run() -> None:
        database = Database(settings.database_url)
        await upgrade(database)
        await database.dispose()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run())
    print("database is at the latest migration")
    return 0


def create_key(settings: Settings, tenant: str, name: str | None) -> int:
    async def run() -> str:
        database, store = await _migrated_key_store(settings)
        _, key = await store.create(tenant, name)
        await database.dispose()
        return key

    key = asyncio.run(run())
    print(key)
    print(f"Created an API key for tenant {tenant!r}. It is shown once; store it now.", file=sys.stderr)
    return 0


def convert_file(args: argparse.Namespace) -> int:
    from dataset_formats.errors import DatasetError
    from dataset_formats.memory_pool import use_bulk_memory_pool
    from finetune_service.convert_command import ConvertArgs, run_convert

    use_bulk_memory_pool()
    mapping = dict(item.split("=", 1) for item in args.map or [] if "=" in item)
    try:
        summary = run_convert(ConvertArgs(
            input=Path(args.input), output=Path(args.output), format_type=args.format, strategy=args.strategy,
            system=args.system, system_template=args.system_template,
            thinking_instructions=args.thinking_instructions, split=args.split, seed=args.seed,
            report=Path(args.report) if args.report else None, mapping=mapping,
        ))
    except (DatasetError, ValueError, OSError) as error:
        print(f"convert: {getattr(error, 'detail', error)}", file=sys.stderr)
        return 2
    for path, part in summary["outputs"].items():
        print(f"{path}: {part['rows_written']:,} lines written, {part['error_count']:,} rows skipped "
              f"(of {part['rows_read']:,})")
        for problem in part["row_errors"]:
            print(f"  row {problem['row']}: {problem['message']}")
    print(f"done in {summary['seconds']}s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the HTTP service")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument("--workers", type=int, default=1,
                           help="worker processes (one per core; they share the database and data folder)")

    commands.add_parser("migrate", help="apply database migrations")

    convert_cmd = commands.add_parser("convert", help="convert a CSV/Parquet/JSONL file to fine-tuning JSONL offline")
    convert_cmd.add_argument("input")
    convert_cmd.add_argument("-o", "--output", required=True, help="output .jsonl (split parts get .PART.jsonl)")
    convert_cmd.add_argument("--format", default="openai_chat_jsonl", help="format type (see GET /format-types)")
    convert_cmd.add_argument("--strategy", default="final_only", help="data strategy")
    convert_cmd.add_argument("--system", default=None, help="system message for every line")
    convert_cmd.add_argument("--system-template", default=None, help='system message template, e.g. "For {product}."')
    convert_cmd.add_argument("--thinking-instructions", default=None)
    convert_cmd.add_argument("--split", default=None, help="preset or name=ratio pairs, e.g. train=0.8,validation=0.2")
    convert_cmd.add_argument("--seed", type=int, default=42)
    convert_cmd.add_argument("--map", action="append", help="column mapping ROLE=COLUMN (user=question, ...)")
    convert_cmd.add_argument("--report", default=None, help="write the validation report and summary as JSON")

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create an API key for a tenant (printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.command == "serve":
        sys.exit(serve(settings, args.host, args.port, args.workers))
    if args.command == "migrate":
        sys.exit(migrate(settings))
    if args.command == "convert":
        sys.exit(convert_file(args))
    sys.exit(create_key(settings, args.tenant, args.name))
