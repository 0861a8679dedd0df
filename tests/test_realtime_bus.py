"""The change bus in-process, on real LMDB: what it forgets, and how a replay shares the loop."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kiln.realtime import ChangeBus, Event, Topic
from kiln.schema import parse_schema
from kiln.storage.clock import HybridClock
from kiln.storage.database import Database
from kiln.storage.operations import Put
from kiln.storage.writer import Writer

SCHEMA = "type Dog @table { id: ID @primaryKey  name: String }"


@pytest.fixture()
def parts(tmp_path: Path) -> Iterator[tuple[Database, Writer, ChangeBus]]:
    clock = HybridClock()
    tables = list(parse_schema(SCHEMA).tables.values())
    database = Database("data", tmp_path / "data", tables, map_size=1 << 26, clock=clock)
    writer = Writer(database)
    writer.start()
    bus = ChangeBus({"data": database}, {"data": writer}, clock)
    yield database, writer, bus
    bus.close()
    writer.close()
    database.close()


def test_a_dropped_wrapper_leaves_the_index(parts: tuple[Database, Writer, ChangeBus]) -> None:
    """An overriding subscribe() that wraps the subscription in a generator and is dropped
    without closing it must not leave the subscription indexed (fed) for ever."""
    _database, _writer, bus = parts

    async def wrapped() -> AsyncIterator[Event]:
        async for event in bus.subscribe(Topic("Dog", "1"), "data"):
            yield event

    async def main() -> int:
        stream = wrapped()
        await anext(stream)  # the history's end marker: the wrapper is running
        held = len(bus._by_record[("Dog", "1")])
        del stream
        gc.collect()
        return held

    assert asyncio.run(main()) == 1
    assert not bus._by_record.get(("Dog", "1"))


def test_a_long_replay_lets_the_loop_run(parts: tuple[Database, Writer, ChangeBus]) -> None:
    """Replaying a long log for a rare topic reads it in chunks, giving the loop a turn between
    them, so one subscriber cannot stall every other request."""
    database, writer, _unused = parts
    for start in range(0, 6000, 1000):
        writer.execute_sync(
            [Put("Dog", f"other-{n}", {"name": "x"}) for n in range(start, start + 1000)]
        )
    writer.execute_sync([Put("Dog", "rare", {"name": "r"})])
    bus = ChangeBus({"data": database}, {"data": writer}, database.clock)  # delivered: all

    async def main() -> tuple[list[str], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        running = asyncio.get_running_loop().create_task(ticker())
        bus._loop = asyncio.get_running_loop()
        found = []
        async for event in bus.subscribe(Topic("Dog", "rare"), "data", since=0):
            if event.type == "sync":
                break
            found.append(event.id)
        running.cancel()
        return found, ticks

    found, ticks = asyncio.run(main())
    assert found == ["rare"]
    assert ticks >= 6  # the loop ran while the 6,001 entries were read
