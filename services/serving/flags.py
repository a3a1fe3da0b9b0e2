"""Per-model feature flags, decoded once per control command and read from memory per request."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType

from safeloop.schemas.events import ModelConfig

FlagValue = bool | int | float | str


def decode_flag(raw: str) -> FlagValue:
    """Flags travel JSON-encoded; anything that is not a JSON scalar is taken as a string."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(value, bool | int | float | str):
        return value
    return raw


def encode_flag(value: FlagValue) -> str:
    return json.dumps(value)


class ModelFlags(Mapping[str, FlagValue]):
    """The flags of one model: an immutable mapping with typed getters."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, FlagValue] | None = None) -> None:
        self._values: Mapping[str, FlagValue] = MappingProxyType(dict(values or {}))

    @classmethod
    def from_config(cls, config: ModelConfig) -> ModelFlags:
        return cls({name: decode_flag(raw) for name, raw in config.flags.items()})

    def __getitem__(self, name: str) -> FlagValue:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def get_bool(self, name: str, default: bool = False) -> bool:
        value = self._values.get(name, default)
        return value if isinstance(value, bool) else default

    def get_number(self, name: str, default: float = 0.0) -> float:
        value = self._values.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return default
        return float(value)

    def get_text(self, name: str, default: str = "") -> str:
        value = self._values.get(name, default)
        return value if isinstance(value, str) else default


NO_FLAGS = ModelFlags()
_current: ContextVar[ModelFlags] = ContextVar("safeloop_model_flags", default=NO_FLAGS)


def current_flags() -> ModelFlags:
    """The flags of the model being called: model code reads its flags through this."""
    return _current.get()


def set_current_flags(flags: ModelFlags) -> None:
    _current.set(flags)


class FlagBook:
    """Every model's flags; replaced wholesale per model so readers never see a half update."""

    def __init__(self) -> None:
        self._by_model: dict[str, ModelFlags] = {}

    def update(self, model_name: str, config: ModelConfig) -> None:
        self._by_model = {**self._by_model, model_name: ModelFlags.from_config(config)}

    def flags(self, model_name: str) -> ModelFlags:
        return self._by_model.get(model_name, NO_FLAGS)
