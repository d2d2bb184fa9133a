"""The conversation aggregate: state, decide and evolve. Pure: the turn's tool calls and answer are made by the
handler and passed in to be recorded."""

from dataclasses import dataclass, replace

from contracts import ErrorCode, Event
from contracts.errors import DomainError
from contracts.neptune import MAX_TURNS, ConversationStarted, StartConversation, TurnCompleted

AGGREGATE = "conversation"


class ConversationNotFound(DomainError):
    code = ErrorCode.CONVERSATION_NOT_FOUND


@dataclass(frozen=True, slots=True)
class Conversation:
    conversation_id: str = ""
    turns: tuple[TurnCompleted, ...] = ()

    @property
    def exists(self) -> bool:
        return bool(self.conversation_id)

    def turn(self, turn_id: str) -> TurnCompleted | None:
        return next((t for t in self.turns if t.turn_id == turn_id), None)


def evolve(state: Conversation, event: Event) -> Conversation:
    match event:
        case ConversationStarted(conversation_id=conversation_id):
            return Conversation(conversation_id=conversation_id)
        case TurnCompleted():
            return replace(state, turns=(*state.turns, event))
    return state


def decide_start(state: Conversation, command: StartConversation, started_by: str, at: str) -> list[Event]:
    if state.exists:
        return []
    return [
        ConversationStarted(conversation_id=command.conversation_id, title=command.title, started_by=started_by, at=at)
    ]


def check_turn(state: Conversation, conversation_id: str) -> None:
    """Before a turn is worked on: the conversation exists and has room."""
    if not state.exists:
        raise ConversationNotFound(f"conversation {conversation_id} not found")
    if len(state.turns) >= MAX_TURNS:
        raise DomainError(
            f"conversation {conversation_id} has {MAX_TURNS} turns; start a new one", code=ErrorCode.CONFLICT
        )


def decide_turn(state: Conversation, turn: TurnCompleted) -> list[Event]:
    check_turn(state, state.conversation_id or "?")
    return [] if state.turn(turn.turn_id) is not None else [turn]
