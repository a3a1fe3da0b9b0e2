"""`safeloop outcomes publish FILE`: a label file (CSV, JSON Lines, Parquet) to `outcomes`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from safeloop.infra.settings import Settings
from safeloop.services.cli.exceptions import UsageError
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.publishing.readers import FileFormat

if TYPE_CHECKING:
    from safeloop.services.publishing.file_publish import FileSummary

# file_publish's DEFAULT_FILE_BATCH (tests/unit/test_cli_imports.py checks it), spelled out so
# that building the parser does not import confluent-kafka.
DEFAULT_FILE_BATCH = 50_000

EPILOG = """\
Columns (CSV header, JSON keys, Parquet columns): prediction_id and ground_truth (a number;
true/false count as 1/0) are required; timestamp (UTC epoch ms or ISO-8601, when the truth was
observed) defaults to the time of the first run on this file, source to --source.

Every batch is confirmed by Kafka before the next; a checkpoint in the state directory records
how far the file got, so rerunning the same command after a crash publishes the rest, and the
batch that was in flight is read back from the topic so that nothing is published twice.

Exit codes: 0 every row published, 1 some rows rejected (each reason is listed; --allow-rejects
makes that 0) or Kafka failed, 2 usage."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    outcomes = subparsers.add_parser("outcomes", help="publish outcomes (ground truth) from files")
    actions = outcomes.add_subparsers(dest="outcomes_command", metavar="ACTION", required=True)
    publish = actions.add_parser(
        "publish",
        help="publish a CSV, JSON Lines or Parquet file of outcomes, resumably",
        description="Validate each row and publish the valid ones as OutcomeEvents to the "
        "outcomes topic, keyed by prediction_id; report every rejected row with its reason.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("file", type=Path, help="the label file")
    publish.add_argument(
        "--format",
        choices=[f.value for f in FileFormat],
        help="file format (default: from the suffix: .csv, .jsonl/.ndjson/.json, .parquet)",
    )
    publish.add_argument(
        "--source", help="source of rows without one (default: the file's name without suffix)"
    )
    publish.add_argument(
        "--allow-rejects", action="store_true", help="exit 0 even if some rows were rejected"
    )
    publish.add_argument("--json", action="store_true", help="print the summary as JSON")
    publish.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint file (default: under SAFELOOP_STATE_DIR/outcome-publish/)",
    )
    publish.add_argument(
        "--restart", action="store_true", help="ignore the checkpoint; publish from the first row"
    )
    publish.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    publish.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_FILE_BATCH,
        help=f"rows per confirmed batch and checkpoint (default {DEFAULT_FILE_BATCH})",
    )
    publish.set_defaults(func=_publish)


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.publishing.checkpoint import default_checkpoint_path
    from safeloop.services.publishing.delivered import TopicTail
    from safeloop.services.publishing.file_publish import FileJob, publish_file
    from safeloop.services.publishing.outcome_publisher import OutcomePublisher
    from safeloop.services.publishing.progress import ProgressBar
    from safeloop.services.publishing.readers import open_rows

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    source = open_rows(args.file, args.format)
    topic = settings.topics.outcomes
    checkpoint = args.checkpoint or default_checkpoint_path(settings.state_dir, args.file, topic)
    job = FileJob(
        source=source,
        checkpoint_path=checkpoint,
        default_source=args.source or args.file.stem,
        batch_size=args.batch_size,
        restart=args.restart,
    )
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    bar = ProgressBar(sys.stderr, f"publishing {args.file.name}") if show_progress else None
    tail = TopicTail(settings, topic)
    with OutcomePublisher(settings, default_source=job.default_source) as publisher:
        try:
            summary = publish_file(job, publisher, tail, bar.update if bar else None)
        finally:
            if bar is not None:
                bar.finish()
            tail.close()
    _report(summary, checkpoint, args.json)
    if summary.rejected_total and not args.allow_rejects:
        return ExitCode.FAILURE
    return ExitCode.OK


def _report(summary: FileSummary, checkpoint: Path, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({**summary.to_json(), "checkpoint": str(checkpoint)}) + "\n")
        return
    lines = []
    if summary.already_finished:
        # Nothing was sent by this run: say what the earlier one did, not "published".
        lines.append(f"already published (checkpoint {checkpoint}); --restart publishes it again")
        lines.append(f"earlier    {summary.published:,} outcomes to {summary.topic}; none sent now")
    else:
        lines.append(f"published  {summary.published:,} outcomes to {summary.topic}")
    if summary.resumed_from_row:
        lines.append(
            f"resumed    at row {summary.resumed_from_row:,}; {summary.already_delivered:,} "
            "outcomes of the interrupted batch were already in Kafka and not sent again"
        )
    lines.append(f"rejected   {summary.rejected_total:,} of {summary.rows:,} rows")
    for reason, count in summary.rejected.items():
        lines.append(f"  {count:>8,}  {reason}")
    for example in summary.examples[:5]:
        lines.append(f"  e.g. row {example['index']}: {example['detail']}")
    sys.stdout.write("\n".join(lines) + "\n")
