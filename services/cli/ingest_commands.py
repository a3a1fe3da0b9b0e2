"""`safeloop ingest`: the HTTP ingest for pipelines that publish outcomes/predictions as JSON."""

from __future__ import annotations

import argparse
import sys

from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode

DEFAULT_PORT = 8090
# ingest_app's defaults (tests/unit/test_cli_imports.py checks them), spelled out so that
# building the parser does not import starlette.
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_SOURCE = "http-ingest"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="serve the HTTP ingest (POST /outcomes, POST /predictions) until Ctrl-C",
        description="Accept JSON batches of outcomes or predictions, validate each record, "
        "publish the valid ones to Kafka and answer once the brokers confirmed them, with a "
        "result per record. Binds 127.0.0.1; another address needs SAFELOOP_INGEST_TOKEN "
        "(clients then send Authorization: Bearer <token>).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"larger bodies are answered 413 (default {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help=f"source of outcomes without one ({DEFAULT_SOURCE})",
    )
    parser.set_defaults(func=_serve, service=True)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from safeloop.infra.kafka.clients import make_producer
    from safeloop.services.publishing.ingest_app import IngestConfig, create_app
    from safeloop.services.publishing.ingest_bind import check_ingest_bind

    check_ingest_bind(args.host, settings.ingest_token)
    config = IngestConfig(
        outcomes_topic=settings.topics.outcomes,
        predictions_topic=settings.topics.predictions,
        token=settings.ingest_token,
        max_body_bytes=args.max_body_bytes,
        default_source=args.source,
        replica_id=settings.replica_id or "http-ingest",
    )
    producer = make_producer(settings)
    app = create_app(config, producer)
    sys.stdout.write(
        f"ingest on http://{args.host}:{args.port}/ publishing to {settings.bootstrap_servers} "
        f"({config.outcomes_topic}, {config.predictions_topic}) (Ctrl-C to stop)\n"
    )
    sys.stdout.flush()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        producer.flush(10)
    return ExitCode.OK
