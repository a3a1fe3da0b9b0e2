"""Label files as rows: CSV (header line), JSON Lines (one object a line) and Parquet.

Each reader yields a mapping per record, or an `InvalidRecordError` for a line that cannot be
parsed (it becomes a rejection with its row number, the file goes on). Rows are numbered from 0
in the order read; `skip` starts after that many (a resumed publish). Blank lines are not rows.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

from safeloop.services.publishing.exceptions import InputFileError, InvalidRecordError

Row = Mapping[str, Any] | tuple[Any, ...] | InvalidRecordError
PARQUET_BATCH_ROWS = 65_536


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


_SUFFIXES = {
    ".csv": FileFormat.CSV,
    ".jsonl": FileFormat.JSONL,
    ".ndjson": FileFormat.JSONL,
    ".json": FileFormat.JSONL,
    ".parquet": FileFormat.PARQUET,
    ".pq": FileFormat.PARQUET,
}


def format_of(path: Path, declared: str | None = None) -> FileFormat:
    """The declared format, else the one the file name says."""
    if declared:
        return FileFormat(declared)
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise InputFileError(
            f"cannot tell the format of {path} from its name: use --format csv|jsonl|parquet"
        )
    return found


@dataclass(frozen=True)
class RowSource:
    """One label file opened for reading; `total_rows` is an estimate for progress bars."""

    path: Path
    format: FileFormat
    total_rows: int

    def rows(self, skip: int = 0, columns: Sequence[str] | None = None) -> Iterator[Row]:
        """The rows after the first `skip`.

        With `columns`, CSV and Parquet rows are tuples of those columns' values (None where
        the file has no such column): no dict per row on the hot path. JSON Lines rows stay
        mappings (each line may name its own keys).
        """
        try:
            if self.format is FileFormat.CSV:
                yield from islice(_csv_rows(self.path, columns), skip, None)
            elif self.format is FileFormat.JSONL:
                yield from islice(_jsonl_rows(self.path), skip, None)
            else:
                yield from _parquet_rows(self.path, skip, columns)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputFileError(f"cannot read {self.path}: {exc}") from exc


def open_rows(path: Path, declared_format: str | None = None) -> RowSource:
    """A `RowSource` over `path`; `InputFileError` if it cannot be read as that format."""
    file_format = format_of(path, declared_format)
    if not path.is_file():
        raise InputFileError(f"{path} is not a file")
    try:
        if file_format is FileFormat.PARQUET:
            total = _parquet_file(path).metadata.num_rows
        else:
            total = _count_lines(path) - (1 if file_format is FileFormat.CSV else 0)
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc}") from exc
    return RowSource(path, file_format, max(0, total))


def _count_lines(path: Path) -> int:
    lines = 0
    last = b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (0 if last == b"\n" else 1)


def _csv_rows(path: Path, columns: Sequence[str] | None) -> Iterator[Row]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        names = [name.strip() for name in header]
        width = len(names)
        pick = None if columns is None else _picker(names, columns)
        for values in reader:
            if not values:
                continue
            if len(values) != width:
                yield InvalidRecordError(
                    "record",
                    "has the wrong number of columns",
                    f"line {reader.line_num}: {len(values)} columns, the header has {width}",
                )
                continue
            yield dict(zip(names, values, strict=True)) if pick is None else pick(values)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    loads = json.loads
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = loads(line)
            except ValueError as exc:
                yield InvalidRecordError(
                    "record", "is not valid JSON", f"line {number}: not valid JSON: {exc}"
                )
                continue
            if not isinstance(value, dict):
                yield InvalidRecordError(
                    "record", "is not an object", f"line {number}: {line.strip()[:80]!r}"
                )
                continue
            yield value


def _parquet_file(path: Path) -> Any:
    import pyarrow.parquet as pq  # noqa: PLC0415 (heavy; only Parquet input needs it)

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a bad file
        raise InputFileError(f"{path} is not a readable Parquet file: {exc}") from exc


def _parquet_rows(path: Path, skip: int, columns: Sequence[str] | None) -> Iterator[Row]:
    parquet = _parquet_file(path)
    for whole in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        if skip >= whole.num_rows:
            skip -= whole.num_rows
            continue
        batch = whole.slice(skip)
        skip = 0
        if columns is None:
            yield from batch.to_pylist()
            continue
        present = set(batch.schema.names)
        yield from zip(
            *(
                batch.column(name).to_pylist() if name in present else [None] * len(batch)
                for name in columns
            ),
            strict=True,
        )


def _picker(names: list[str], columns: Sequence[str]) -> Callable[[list[str]], tuple[Any, ...]]:
    """A function from a CSV line's values to the wanted columns' values, in C when it can."""
    where = [names.index(column) if column in names else None for column in columns]
    if all(index is not None for index in where) and len(where) > 1:
        return cast(Callable[[list[str]], tuple[Any, ...]], itemgetter(*where))

    def pick(values: list[str]) -> tuple[Any, ...]:
        return tuple(None if index is None else values[index] for index in where)

    return pick
