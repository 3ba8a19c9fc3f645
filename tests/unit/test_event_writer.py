"""EventWriter on the embedded store: events reach the log in order, and what is not written when
the run ends is handed to the run's end instead of written on its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import fakeredis
import pytest

from agent_api.agents.events import MessageEvent, TokenEvent
from agent_api.models.chat import ChatMessage
from agent_api.runs.executor import SETTLE_SECONDS, EventWriter
from agent_api.runs.model import IfBusy, Run, utcnow
from agent_api.runs.store import RunStore
from tests.utils.runs import queued_run


@pytest.fixture
async def store() -> AsyncIterator[RunStore]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    store = RunStore(client, follow_client=None, run_ttl=60)
    yield store
    await client.aclose()


async def new_run(store: RunStore) -> Run:
    run = queued_run("run_w")
    await store.create(run, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}")
    return run


def token(text: str) -> TokenEvent:
    return TokenEvent(agent="assistant", text=text, chunk=text)


async def logged(store: RunStore, run: Run) -> list[str]:
    """The text of the token frames in the run's log (the first entry is the session frame)."""
    entries = await store.read(run.id, "0", block=0)
    return [json.loads(e.data)["text"] for e in entries if e.event == "token"]


async def test_flush_writes_everything_added_before_it_in_order(store: RunStore) -> None:
    run = await new_run(store)
    writer = EventWriter(store, run)
    for text in ("a", "b", "c"):
        writer.add(token(text))
    await writer.flush()
    assert "".join(await logged(store, run)) == "abc"
    writer.add(token("d"))
    await writer.close()
    assert "".join(await logged(store, run)) == "abcd"


async def test_detach_hands_over_what_is_not_written_and_writes_nothing_more(store: RunStore) -> None:
    run = await new_run(store)
    writer = EventWriter(store, run)
    writer.add(token("written "))
    await writer.flush()
    writer.add(token("left "))
    writer.add(token("over"))
    rest = await writer.detach()  # the writer has not taken them yet
    assert [(event, json.loads(data)["text"]) for event, data in rest] == [("token", "left over")]
    assert await logged(store, run) == ["written "]
    writer.add(token("late"))  # nobody writes after a detach
    assert await logged(store, run) == ["written "]


async def test_detach_lets_the_write_in_progress_finish(store: RunStore) -> None:
    run = await new_run(store)
    writer = EventWriter(store, run)
    writer.add(token("first"))
    for _ in range(100):  # until the writer has taken the batch and is writing it
        if writer._writing:
            break
        await asyncio.sleep(0)
    assert writer._writing
    writer.add(token("second"))
    rest = await writer.detach()
    assert await logged(store, run) == ["first"]
    assert [json.loads(data)["text"] for _, data in rest] == ["second"]


def message(text: str) -> MessageEvent:
    return MessageEvent(message=ChatMessage(role="assistant", content=text, name="assistant", timestamp=utcnow()))


async def test_a_message_waits_a_moment_for_the_run_s_end_to_write_it(store: RunStore) -> None:
    run = await new_run(store)
    writer = EventWriter(store, run)
    writer.add(message("the answer"))
    await asyncio.sleep(0)  # the writer has seen it, and waits
    rest = await writer.detach()  # the run ends within the moment: its end writes the message
    assert [json.loads(data)["message"]["content"] for _, data in rest] == ["the answer"]
    assert [e.event for e in await store.read(run.id, "0", block=0)] == ["session"]


async def test_a_run_that_does_not_stream_hands_its_whole_reply_to_its_end(store: RunStore) -> None:
    run = await new_run(store)
    run.stream = False
    writer = EventWriter(store, run)
    writer.add(token("the answer"))  # a reply that was not streamed comes as one token event
    writer.add(message("the answer"))
    await asyncio.sleep(0)
    rest = await writer.detach()
    assert [event for event, _ in rest] == ["token", "message"]
    assert [e.event for e in await store.read(run.id, "0", block=0)] == ["session"]


async def test_a_message_not_followed_by_the_end_is_written_after_the_moment(store: RunStore) -> None:
    run = await new_run(store)
    writer = EventWriter(store, run)
    writer.add(message("first"))
    writer.add(token("next agent"))  # what comes meanwhile joins the same write
    for _ in range(200):
        if len(await store.read(run.id, "0", block=0)) == 3:
            break
        await asyncio.sleep(SETTLE_SECONDS / 5)
    assert [e.event for e in await store.read(run.id, "0", block=0)] == ["session", "message", "token"]
    assert await writer.detach() == []
