"""Conversion between the frozen event dataclasses and the plain dicts fastavro reads and writes.

Only fields that need it (enums, nested records) are converted; the rest pass through, so the
hot path is one `dict(zip(...))` on encode and one generated builder call on decode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import StrEnum
from operator import attrgetter
from types import MemberDescriptorType, NoneType, UnionType
from typing import Any, Generic, TypeVar, cast, get_args, get_type_hints

from safeloop.schemas.exceptions import DecodeError, DecodeReason
from safeloop.schemas.native_codec import ObjectTarget

T = TypeVar("T")

Record = dict[str, Any]
_Convert = Callable[[Any], Any]


def _enum_decoder(enum_type: type[StrEnum], owner: str, name: str) -> _Convert:
    by_value = {member.value: member for member in enum_type}

    def decode(value: str) -> StrEnum:
        try:
            return by_value[value]
        except KeyError:
            raise DecodeError(
                DecodeReason.INVALID_FIELD,
                f"{owner}.{name}={value!r} is not a {enum_type.__name__}",
                field=name,
            ) from None

    return decode


def _optional(decode: _Convert) -> _Convert:
    def decode_optional(value: Any) -> Any:
        return None if value is None else decode(value)

    return decode_optional


def _optional_type(hint: Any) -> type[Any] | None:
    """X of an `X | None` hint when X is a class, else None."""
    if not isinstance(hint, UnionType):
        return None
    members = [arg for arg in get_args(hint) if arg is not NoneType]
    if len(members) == 1 and isinstance(members[0], type):
        return members[0]
    return None


class RecordMapper(Generic[T]):
    """Turns one dataclass type into Avro records and back."""

    def __init__(self, cls: type[T]) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        self.cls = cls
        self.field_names: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(cls))
        # attrgetter of several names returns a tuple: one C call reads every slot.
        self._get_all = attrgetter(*self.field_names)
        self._encoders: list[tuple[str, _Convert]] = []
        decoders: dict[str, _Convert] = {}
        # Field -> its enum's members by value (plain and optional enum fields).
        self._enum_members: dict[str, dict[str, StrEnum]] = {}
        hints = get_type_hints(cls)
        for name in self.field_names:
            hint = hints[name]
            if isinstance(hint, type) and issubclass(hint, StrEnum):
                # A StrEnum member is a str, so fastavro writes it as is; only reading converts.
                decoders[name] = _enum_decoder(hint, cls.__name__, name)
                self._enum_members[name] = {member.value: member for member in hint}
            elif (optional := _optional_type(hint)) is not None and issubclass(optional, StrEnum):
                decoders[name] = _optional(_enum_decoder(optional, cls.__name__, name))
                self._enum_members[name] = {member.value: member for member in optional}
            elif optional is not None and dataclasses.is_dataclass(optional):
                maybe: RecordMapper[Any] = RecordMapper(optional)
                self._encoders.append((name, _optional(maybe.to_record)))
                decoders[name] = _optional(maybe.from_record)
            elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
                nested: RecordMapper[Any] = RecordMapper(hint)
                self._encoders.append((name, nested.to_record))
                decoders[name] = nested.from_record
        # Whether encoding passes every field through as it is (no nested records).
        self.flat = not self._encoders
        # Builds the dataclass from a record holding (at least) its fields.
        self.from_record: Callable[[Record], T] = _compile_builder(cls, self.field_names, decoders)

    def object_target(self, names: list[str]) -> ObjectTarget | None:
        """How a compiled loop builds this class straight from a body whose fields are `names`
        (see `native_codec.read_object`); None unless the class is flat, slotted, without a
        __post_init__, and every one of its fields is among `names`."""
        cls = self.cls
        slots = {name: getattr(cls, name, None) for name in self.field_names}
        if (
            not self.flat
            or hasattr(cls, "__post_init__")
            or not all(isinstance(slot, MemberDescriptorType) for slot in slots.values())
            or not set(self.field_names) <= set(names)
        ):
            return None
        return ObjectTarget(
            cls,
            [slots.get(name) for name in names],
            [self._enum_members.get(name) for name in names],
        )

    def to_record(self, obj: T) -> Record:
        """A fresh dict of the object's fields, nested dataclasses as dicts."""
        record = dict(zip(self.field_names, self._get_all(obj), strict=True))
        for name, convert in self._encoders:
            record[name] = convert(record[name])
        return record


def _compile_builder(
    cls: type[T], names: tuple[str, ...], decoders: dict[str, _Convert]
) -> Callable[[Record], T]:
    """A function building `cls` from a record holding its fields (at least).

    Decoding is the stream's hot path. A frozen dataclass's __init__ sets each field through
    object.__setattr__, ~2.5 us for a PredictionEvent; straight-line code writing the slots
    through their descriptors takes ~0.9 us. Generated like dataclasses generates __init__;
    the names are the class's own field identifiers, never input data.
    """
    slots = [getattr(cls, name, None) for name in names]
    if hasattr(cls, "__post_init__") or not all(
        isinstance(slot, MemberDescriptorType) for slot in slots
    ):
        return _keyword_builder(cls, names, decoders)
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = ["def build(record):", "    obj = _new(_cls)"]
    for i, name in enumerate(names):
        env[f"_set{i}"] = cast(MemberDescriptorType, slots[i]).__set__
        value = f"record[{name!r}]"
        if name in decoders:
            env[f"_dec{i}"] = decoders[name]
            value = f"_dec{i}({value})"
        lines.append(f"    _set{i}(obj, {value})")
    lines.append("    return obj")
    exec("\n".join(lines), env)  # noqa: S102 - source built from field names only, see above
    return cast(Callable[[Record], T], env["build"])


def _keyword_builder(
    cls: type[T], names: tuple[str, ...], decoders: dict[str, _Convert]
) -> Callable[[Record], T]:
    # The plain path, for classes without slots or with a __post_init__ to honour.
    def build(record: Record) -> T:
        for name, convert in decoders.items():
            record[name] = convert(record[name])
        return cls(**{name: record[name] for name in names})

    return build


def slot_constructor(cls: type[T]) -> Callable[..., T]:
    """A function building `cls` from all its fields, positionally, in declaration order,
    without the frozen dataclass __init__'s object.__setattr__ per field (about half the
    cost, for events built on the hot path). `cls` must be a slotted dataclass without a
    __post_init__."""
    names = tuple(f.name for f in dataclasses.fields(cast(Any, cls)))
    slots = [getattr(cls, name, None) for name in names]
    if hasattr(cls, "__post_init__") or not all(
        isinstance(slot, MemberDescriptorType) for slot in slots
    ):
        raise TypeError(f"{cls!r} is not a slotted dataclass without __post_init__")
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def build({', '.join(names)}):", "    obj = _new(_cls)"]
    for i, name in enumerate(names):
        env[f"_set{i}"] = cast(MemberDescriptorType, slots[i]).__set__
        lines.append(f"    _set{i}(obj, {name})")
    lines.append("    return obj")
    exec("\n".join(lines), env)  # noqa: S102 - source built from field names only
    return cast(Callable[..., T], env["build"])
