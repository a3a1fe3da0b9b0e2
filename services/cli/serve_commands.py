"""`safeloop serve` runs a replica; `safeloop model train|list` manages the model store."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.control.exceptions import ControlError
from safeloop.services.models.exceptions import ModelError
from safeloop.services.models.task import ModelTask

if TYPE_CHECKING:
    from safeloop.services.models.linear import LinearModel
    from safeloop.services.models.metadata import ModelMetadata
    from safeloop.services.models.softmax import SoftmaxModel

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run one serving replica (HTTP /predict, publishes every prediction)",
        description="Load every version of the served models, rebuild control state from the "
        "whole control topic, then answer on HTTP. /readyz turns 200 once rebuilt.",
        epilog="exit codes: 0 stopped cleanly, 1 failure (broken model artifact, no control "
        "key, ...), 2 usage",
    )
    serve.add_argument("--replica-id", help="default: SAFELOOP_REPLICA_ID or <host>-<pid>")
    serve.add_argument("--host", help="default: SAFELOOP_SERVING_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default: SAFELOOP_SERVING_PORT (8080)")
    serve.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME|URI",
        help="serve only this model (repeatable): NAME (every version) or an MLflow URI, "
        "models:/NAME/VERSION or models:/NAME@ALIAS (that version first); default: every "
        "model in the store",
    )
    serve.add_argument(
        "--local-guard",
        action="store_true",
        help="judge canaries on this replica too and stop routing to a breaching one at once "
        "(the central guard's signed rollback follows)",
    )
    serve.set_defaults(func=run_serve, service=True)

    model = subparsers.add_parser("model", help="train demo models and list the model store")
    actions = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    train = actions.add_parser(
        "train",
        help="train a numpy model on generated data and save it as NAME/VERSION",
        description="Trains logistic (classification), softmax (multiclass) or linear "
        "(regression) regression on generated rows and stores the artifact with its training "
        "baseline and holdout "
        "metrics in the model store (SAFELOOP_MODEL_STORE: folder, or mlflow, whose registry "
        "numbers the version itself and keeps --version as the safeloop.trained_as tag).",
    )
    train.add_argument("name")
    train.add_argument("--version", required=True, help="the version's name (folder store)")
    train.add_argument(
        "--task", choices=[task.value for task in ModelTask], default=ModelTask.CLASSIFICATION.value
    )
    train.add_argument("--rows", type=int, default=20_000, help="generated rows (default 20000)")
    train.add_argument(
        "--classes", type=int, default=3, help="classes of a multiclass model (default 3)"
    )
    train.add_argument("--seed", type=int, default=0, help="data seed: versions differ by seed")
    train.add_argument(
        "--features",
        help="comma-separated feature names (default: the demo model's age, income, "
        "tenure_months, sessions_7d)",
    )
    train.add_argument("--json", action="store_true", help="print the metadata as JSON")
    train.set_defaults(func=run_train)
    listing = actions.add_parser("list", help="models and versions in the store")
    listing.add_argument("name", nargs="?")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=run_list)


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn  # only `serve` needs the server

    from safeloop.services.guard.local import ReplicaGuard
    from safeloop.services.guard.policy import GuardPolicy
    from safeloop.services.models.open_store import open_mlflow_store, open_model_store
    from safeloop.services.models.reference import is_model_uri
    from safeloop.services.serving.replica import Replica, default_replica_id

    replica_id = args.replica_id or settings.replica_id or default_replica_id()
    guard = ReplicaGuard(GuardPolicy()) if args.local_guard else None
    try:
        # A models:/ URI names MLflow's registry, whatever SAFELOOP_MODEL_STORE says.
        uses_mlflow = any(is_model_uri(given) for given in args.models or ())
        store = open_mlflow_store(settings) if uses_mlflow else open_model_store(settings)
        replica = Replica(settings, replica_id, model_names=args.models, guard=guard, store=store)
    except (ModelError, ControlError) as exc:
        sys.stderr.write(f"safeloop serve: {exc}\n")
        return ExitCode.FAILURE
    host = args.host or settings.serving_host
    port = args.port or settings.serving_port
    server = uvicorn.Server(
        uvicorn.Config(
            replica.app,
            host=host,
            port=port,
            access_log=False,
            lifespan="off",
            log_level=settings.log_level.lower(),
        )
    )
    logger.info("replica %s serving %s on %s:%s", replica_id, replica.catalog.names(), host, port)

    # uvicorn restores the previous handlers on exit and re-raises the signal it caught; with
    # ours in place that re-raise only asks again to stop, so the replica still says STOPPING
    # on replica-status and flushes its events before the process ends.
    def stop_serving(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop_serving)
    replica.start()
    try:
        server.run()
    finally:
        replica.stop()
    logger.info("replica %s stopped", replica_id)
    return ExitCode.OK


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.models.open_store import open_model_store
    from safeloop.services.models.store import check_name
    from safeloop.services.models.training import (
        DEFAULT_FEATURES,
        make_dataset,
        train_model,
        train_multiclass_model,
    )

    given = DEFAULT_FEATURES if args.features is None else args.features.split(",")
    features = tuple(name.strip() for name in given if name.strip())
    try:
        check_name("model name", args.name)
        check_name("version", args.version)
    except ValueError as exc:
        sys.stderr.write(f"safeloop model train: {exc}\n")
        return ExitCode.USAGE
    if args.rows < 10 or not features:
        sys.stderr.write("safeloop model train: need --rows >= 10 and at least one feature\n")
        return ExitCode.USAGE
    task = ModelTask(args.task)
    if args.classes < 2:
        sys.stderr.write("safeloop model train: need --classes >= 2\n")
        return ExitCode.USAGE
    dataset = make_dataset(task, args.rows, features, seed=args.seed, n_classes=args.classes)
    trained: tuple[LinearModel | SoftmaxModel, ModelMetadata]
    if task is ModelTask.MULTICLASS:
        trained = train_multiclass_model(args.name, args.version, dataset)
    else:
        trained = train_model(args.name, args.version, task, dataset)
    model, metadata = trained
    try:
        store = open_model_store(settings)
        version = store.save(model, metadata)
    except FileExistsError as exc:
        sys.stderr.write(f"safeloop model train: {exc}\n")
        return ExitCode.FAILURE
    except ModelError as exc:
        sys.stderr.write(f"safeloop model train: {exc}\n")
        return ExitCode.FAILURE
    if args.json:
        sys.stdout.write(json.dumps({**metadata.to_json(), "version": version}, indent=2) + "\n")
    else:
        # A registry numbers versions itself: --version is then kept as the trained_as tag.
        sys.stdout.write(
            f"saved {args.name} {version} ({task.value}, {metadata.kind}) in {store.location}: "
            f"{metadata.primary_metric} {metadata.primary_metric_value:.4f} on holdout\n"
        )
    return ExitCode.OK


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.models.open_store import open_model_store
    from safeloop.services.models.store_protocol import CHAMPION_ALIAS

    try:
        store = open_model_store(settings)
        names = [args.name] if args.name else store.names()
        listing = {name: store.versions(name) for name in names}
        default = {name: store.default_version(name) for name in names}
        champion = {name: store.alias_version(name, CHAMPION_ALIAS) for name in names}
        features = {
            name: {v: list(store.load_metadata(name, v).feature_names) for v in versions}
            for name, versions in listing.items()
        }
    except ModelError as exc:
        sys.stderr.write(f"safeloop model list: {exc}\n")
        return ExitCode.FAILURE
    if args.json:
        payload = {
            "store": store.location,
            "models": listing,
            "features": features,
            "champion": champion,
        }
        sys.stdout.write(json.dumps(payload) + "\n")
        return ExitCode.OK
    if not listing:
        sys.stdout.write(f"no models in {store.location}; create one with `safeloop model train`\n")
    for name, versions in listing.items():
        sys.stdout.write(f"{name}:\n")
        for version in versions:
            marks = [
                *(["default"] if version == default[name] else []),
                *([CHAMPION_ALIAS] if version == champion[name] else []),
            ]
            mark = f" ({', '.join(marks)})" if marks else ""
            feature_list = ", ".join(features[name][version])
            sys.stdout.write(f"  {version}{mark}  features: {feature_list}\n")
    return ExitCode.OK
