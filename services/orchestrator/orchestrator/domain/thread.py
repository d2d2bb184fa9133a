"""The thread aggregate: state, decide and evolve. Pure: who the addressees are and whom they reach (a team's
members) is resolved by the handler and passed in."""

from dataclasses import dataclass, replace

from contracts import ErrorCode, Event
from contracts.errors import DomainError
from contracts.mail import MAX_THREAD_MESSAGES, MessagePosted, Participant, PostMessage, ThreadStarted

AGGREGATE = "thread"


class ThreadNotFound(DomainError):
    code = ErrorCode.THREAD_NOT_FOUND


class ThreadFull(DomainError):
    code = ErrorCode.THREAD_FULL


@dataclass(frozen=True, slots=True)
class Thread:
    thread_id: str = ""
    subject: str = ""
    participants: tuple[Participant, ...] = ()
    message_ids: frozenset[str] = frozenset()

    @property
    def exists(self) -> bool:
        return bool(self.thread_id)


def evolve(state: Thread, event: Event) -> Thread:
    match event:
        case ThreadStarted(thread_id=thread_id, subject=subject, started_by=started_by):
            return Thread(thread_id=thread_id, subject=subject, participants=(started_by,))
        case MessagePosted(message_id=message_id, sender=sender, to=to):
            joined = [p for p in (sender, *to) if p not in state.participants]
            return replace(
                state,
                participants=(*state.participants, *dict.fromkeys(joined)),
                message_ids=state.message_ids | {message_id},
            )
    return state


def addressees(state: Thread, command: PostMessage, sender: Participant) -> list[Participant]:
    """Whom the message is for: its ``to``, or, in a thread, everyone else who took part (agents and teams)."""
    if command.to is not None:
        return [command.to.participant()]
    return [p for p in state.participants if p != sender and p.kind != "person"]


def decide_post(
    state: Thread, command: PostMessage, sender: Participant, to: list[Participant], recipients: list[str], at: str
) -> list[Event]:
    """``to``: the addressees (from ``addressees``); ``recipients``: the agents they reach, the sender left out."""
    if command.message_id in state.message_ids:
        return []  # posted already: a repeat of the same message changes nothing
    events: list[Event] = []
    if not state.exists:
        if not command.new_thread:
            raise ThreadNotFound(f"thread {command.thread_id} not found")
        events.append(ThreadStarted(thread_id=command.thread_id, subject=command.subject, started_by=sender))
    elif command.new_thread:
        raise DomainError(f"thread {command.thread_id} exists already", code=ErrorCode.CONFLICT)
    if len(state.message_ids) >= MAX_THREAD_MESSAGES:
        raise ThreadFull(f"thread {command.thread_id} holds {MAX_THREAD_MESSAGES} messages; start a new one")
    if not to:
        raise DomainError("the message has nobody to go to: give `to`", code=ErrorCode.VALIDATION_FAILED)
    posted = MessagePosted(
        thread_id=command.thread_id,
        message_id=command.message_id,
        sender=sender,
        to=to,
        recipients=recipients,
        body=command.body,
        run_id=command.run_id,
        at=at,
    )
    return [*events, posted]
