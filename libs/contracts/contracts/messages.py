"""Base classes of every command, event and query."""

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Strict, StringConstraints
from pydantic_core import PydanticCustomError

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
"""An id that is safe in subjects, stream names and URLs."""


def _a_number(value: Any) -> Any:
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("number_type", "Input should be a number, not {kind}", {"kind": type(value).__name__})
    return value


A_NUMBER = BeforeValidator(_a_number)
"""Refuses ``true`` and ``"1"`` before pydantic's lax mode would take them for numbers. Constraints go before it
(``Annotated[int, Field(ge=0), A_NUMBER]``), or the JSON Schema of an optional field loses them."""
Integer = Annotated[int, A_NUMBER]
"""An integer as JSON Schema means it: a number without a fraction (``1`` or ``1.0``), never ``true`` or ``"1"``
(pydantic's lax mode takes both, its strict mode refuses ``1.0``)."""
Number = Annotated[float, Strict()]
"""A number as JSON Schema means it (an integer too), never ``true`` or ``"1.5"``."""
Boolean = Annotated[bool, Strict()]
"""``true`` or ``false``, never ``1`` or ``"yes"``."""

WHITESPACE = " \t\n\v\f\r"
NOT_BLANK = r"[^ \t\n\v\f\r]"
"""A pattern (unanchored, as JSON Schema's): holds a character other than whitespace. Whitespace is spelled out
(ASCII) rather than ``\\s``, which Python, Rust (pydantic) and ECMAScript (JSON Schema) each define differently."""


def _trim(value: str) -> str:
    return value.strip(WHITESPACE)


Name = Annotated[str, StringConstraints(min_length=1, max_length=120, pattern=NOT_BLANK), AfterValidator(_trim)]
"""A display name: 1 to 120 characters, not all whitespace; surrounding whitespace is dropped."""
Label = Annotated[str, StringConstraints(min_length=1, max_length=60, pattern=NOT_BLANK), AfterValidator(_trim)]
"""A short label (a tag, a capability): 1 to 60 characters, not all whitespace; surrounding whitespace is dropped."""
Title = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK), AfterValidator(_trim)]
"""A title (a workflow's name): 1 to 200 characters, not all whitespace; surrounding whitespace is dropped."""


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
