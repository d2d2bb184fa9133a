"""Base classes of every command, event and query."""

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, StringConstraints

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
"""An id that is safe in subjects, stream names and URLs."""


class Message(BaseModel):
    """A frozen message with a stable type name and a schema version.

    ``type_name`` defaults to the class name; ``schema_version`` is raised whenever the shape changes, and an
    upcaster registered in the registry lifts older stored payloads to the current shape on read.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type_name: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "type_name" not in cls.__dict__:
            cls.type_name = cls.__name__


class Command(Message):
    """An imperative request to one service; handled once, answered with a CommandOutcome."""

    service: ClassVar[str] = ""


class Event(Message):
    """A past-tense fact appended to an aggregate's stream."""

    aggregate: ClassVar[str] = ""


class Query(Message):
    """A read request answered synchronously from a read model."""

    service: ClassVar[str] = ""
