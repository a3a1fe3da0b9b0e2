"""Where a file publish got to: rows confirmed by Kafka, and the batch in flight when it stopped.

Written atomically (temporary file + rename) after every confirmed batch, and before each batch
with the topic's end offsets, so that a rerun after a crash skips the confirmed rows and, for the
batch in flight, the outcomes the crashed run had already delivered (it reads them back).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safeloop.services.publishing.exceptions import CheckpointError

FORMAT_VERSION = 1
_HEAD_BYTES = 1 << 16


@dataclass(frozen=True)
class FileIdentity:
    """Enough to tell that a checkpoint belongs to this file, unchanged."""

    path: str
    size: int
    head_sha256: str

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
        return cls(str(path.resolve()), path.stat().st_size, hashlib.sha256(head).hexdigest())


@dataclass
class Checkpoint:
    """The state of one file's publish; `rows_done` rows are published or rejected for good."""

    file: FileIdentity
    topic: str
    source: str
    # The timestamp given to rows without one, fixed at the first run so that a rerun
    # produces the same outcome identities.
    default_timestamp_ms: int
    rows_done: int = 0
    published: int = 0
    # Reason -> count, and the first few rejections in full.
    rejected: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    # The batch being produced: its first row and the topic's end offsets before it.
    in_flight_row: int | None = None
    in_flight_offsets: dict[int, int] = field(default_factory=dict)
    finished: bool = False

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = FORMAT_VERSION
        data["in_flight_offsets"] = {str(p): o for p, o in self.in_flight_offsets.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        if data.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"checkpoint format {data.get('version')!r} is not supported")
        return cls(
            file=FileIdentity(**data["file"]),
            topic=data["topic"],
            source=data["source"],
            default_timestamp_ms=int(data["default_timestamp_ms"]),
            rows_done=int(data["rows_done"]),
            published=int(data["published"]),
            rejected={str(k): int(v) for k, v in data["rejected"].items()},
            examples=list(data["examples"]),
            in_flight_row=data["in_flight_row"],
            in_flight_offsets={int(p): int(o) for p, o in data["in_flight_offsets"].items()},
            finished=bool(data["finished"]),
        )


def default_checkpoint_path(state_dir: Path, input_path: Path, topic: str) -> Path:
    """`<state_dir>/outcome-publish/<digest of the input path and topic>.json`."""
    digest = hashlib.sha256(f"{input_path.resolve()}\0{topic}".encode()).hexdigest()[:20]
    return state_dir / "outcome-publish" / f"{input_path.name}.{digest}.json"


def load(path: Path) -> Checkpoint | None:
    """The checkpoint at `path`, or None if there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    try:
        return Checkpoint.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is damaged ({exc}); remove it or pass --restart"
        ) from exc


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically: a crash leaves the old checkpoint or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(checkpoint.to_json(), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
