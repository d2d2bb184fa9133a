"""Maps type names to message classes and lifts stored payloads of old schema versions to the current one."""

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from contracts.messages import Message

M = TypeVar("M", bound=type[Message])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownMessageType(LookupError):
    pass


class Registry:
    def __init__(self) -> None:
        self._classes: dict[str, type[Message]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: M) -> M:
        """Class decorator: make ``cls`` known under its ``type_name``."""
        existing = self._classes.get(cls.type_name)
        if existing is not None and existing is not cls:
            raise ValueError(f"message type {cls.type_name!r} registered twice")
        self._classes[cls.type_name] = cls
        return cls

    def upcaster(self, type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: register a function lifting ``type_name`` payloads from ``from_version`` to the next."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(type_name, from_version)] = fn
            return fn

        return decorate

    def get(self, type_name: str) -> type[Message]:
        try:
            return self._classes[type_name]
        except KeyError:
            raise UnknownMessageType(type_name) from None

    def upcast(self, type_name: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
        current = self.get(type_name).schema_version
        version = schema_version
        while version < current:
            step = self._upcasters.get((type_name, version))
            if step is None:
                raise UnknownMessageType(f"no upcaster for {type_name} v{version}")
            data = step(dict(data))
            version += 1
        return data

    def load(self, type_name: str, schema_version: int, data: dict[str, Any]) -> Message:
        """Build the current class from a payload of any known version; never rewrites what is stored."""
        cls = self.get(type_name)
        return cls.model_validate(self.upcast(type_name, schema_version, data))

    def __iter__(self) -> Iterator[type[Message]]:
        return iter(sorted(self._classes.values(), key=lambda c: c.type_name))


REGISTRY = Registry()
