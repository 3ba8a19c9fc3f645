"""EventWriter on the embedded store: events reach the log in order, and what is not written when
the run ends is handed to the run's end instead of written on its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import fakeredis
import pytest

from agent_api.agents.events import TokenEvent
from agent_api.runs.executor import EventWriter
from agent_api.runs.model import IfBusy, Run
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
