from functools import reduce

import pytest
from pydantic import ValidationError

from contracts import Event
from contracts.errors import DomainError
from contracts.mail import MAX_THREAD_MESSAGES, Addressee, MessagePosted, Participant, PostMessage, ThreadStarted
from orchestrator.domain.thread import Thread, ThreadFull, ThreadNotFound, addressees, decide_post, evolve

ALICE = Participant(kind="agent", id="alice")
BOB = Participant(kind="agent", id="bob")
PERSON = Participant(kind="person", id="key1")
AT = "2026-12-03T10:00:00+00:00"


def post(message_id: str, *, new: bool = False, to: str | None = None, body: str = "hello") -> PostMessage:
    return PostMessage(
        thread_id="th1",
        message_id=message_id,
        new_thread=new,
        to=Addressee(agent_id=to) if to else None,
        body=body,
    )


def apply(state: Thread, events: list[Event]) -> Thread:
    return reduce(evolve, events, state)


def started() -> Thread:
    command = post("m1", new=True, to="bob")
    return apply(Thread(), decide_post(Thread(), command, ALICE, addressees(Thread(), command, ALICE), ["bob"], AT))


def test_a_new_thread_starts_with_its_first_message_and_both_take_part() -> None:
    command = post("m1", new=True, to="bob")
    events = decide_post(Thread(), command, ALICE, [BOB], ["bob"], AT)
    assert [type(e) for e in events] == [ThreadStarted, MessagePosted]
    posted = events[1]
    assert isinstance(posted, MessagePosted)
    assert (posted.sender, posted.to, posted.recipients) == (ALICE, [BOB], ["bob"])
    assert apply(Thread(), events).participants == (ALICE, BOB)


def test_a_reply_without_to_goes_to_the_others_in_the_thread() -> None:
    state = started()
    reply = post("m2")
    assert addressees(state, reply, BOB) == [ALICE]
    assert addressees(state, reply, PERSON) == [ALICE, BOB]  # a person joining reaches every agent


def test_a_message_to_an_unknown_thread_is_refused() -> None:
    with pytest.raises(ThreadNotFound):
        decide_post(Thread(), post("m1"), ALICE, [BOB], ["bob"], AT)


def test_starting_a_thread_that_exists_is_refused_and_a_repeat_changes_nothing() -> None:
    state = started()
    with pytest.raises(DomainError):
        decide_post(state, post("m9", new=True, to="bob"), ALICE, [BOB], ["bob"], AT)
    assert decide_post(state, post("m1", new=True, to="bob"), ALICE, [BOB], ["bob"], AT) == []


def test_a_full_thread_takes_no_more() -> None:
    state = Thread(
        thread_id="th1", participants=(ALICE, BOB), message_ids=frozenset(map(str, range(MAX_THREAD_MESSAGES)))
    )
    with pytest.raises(ThreadFull):
        decide_post(state, post("one-more"), ALICE, [BOB], ["bob"], AT)


def test_a_message_with_nobody_to_go_to_is_refused() -> None:
    lonely = Thread(thread_id="th1", participants=(ALICE,))
    with pytest.raises(DomainError):
        decide_post(lonely, post("m2"), ALICE, addressees(lonely, post("m2"), ALICE), [], AT)


@pytest.mark.parametrize(
    "body",
    [
        {"thread_id": "th1", "message_id": "m1", "body": " \n"},  # blank
        {"thread_id": "th1", "message_id": "m1", "body": "x" * 8001},  # too long
        {"thread_id": "th1", "message_id": "m1", "body": "hi", "new_thread": True},  # a new thread for nobody
        {"thread_id": "th.1", "message_id": "m1", "body": "hi"},  # not an id
        {"thread_id": "th1", "message_id": "m1", "body": "hi", "to": {"agent_id": "a", "team_id": "t"}},
    ],
)
def test_bad_messages_do_not_validate(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PostMessage.model_validate(body)
