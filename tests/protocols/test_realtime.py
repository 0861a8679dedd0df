"""Real-time against a real ``kiln run`` server: Server-Sent Events and WebSocket.

Writes go in over REST (httpx) and come out over SSE (streamed httpx) and WebSocket
(the ``websockets`` package); messages go in over WebSocket or a resource's
``publish``. One server serves the module; every test uses its own record ids.
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from realtime_clients import sse
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import ADMIN_AUTH, KilnServer, free_port, write_app, ws_event

SCHEMA = """
type Dog @table @export {
  id: ID @primaryKey
  name: String
  age: Int
}

type Counter @table @export {
  id: Int @primaryKey
  count: Int
}
"""

CONFIG = """
http:
  maxBodySize: 64KiB
realtime:
  heartbeat: 300ms
  subscriberQueue: 5
"""
MAX_BODY = 64 * 1024

RESOURCES = '''
import asyncio

from kiln import Resource, tables
from kiln.errors import Forbidden


class Room(Resource):
    """A plain resource: a message channel with nothing stored."""

    async def post(self, target, data):
        self.publish(target, data)
        return {"sent": data}


class Echo(Resource):
    """Publishes asynchronously, transforming what it is sent."""

    async def publish(self, target, message):
        await asyncio.sleep(0)
        super().publish(target, {"echo": message})


class Slow(tables.Dog):
    """Reads its own subscription slowly: it falls behind and is closed."""

    async def subscribe(self, target):
        async for event in super().subscribe(target):
            await asyncio.sleep(0.2)
            yield event


class Secret(tables.Dog):
    """Nobody may subscribe."""

    def allow_subscribe(self, target):
        return False
'''

_ids = itertools.count(1)


def new_id(prefix: str = "") -> str:
    """A record id no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:8]}-{next(_ids)}"


def put(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = http.put(path, json=body)
    assert response.status_code == 204, response.text


@pytest.fixture()
def stream_client(kiln_server: KilnServer) -> Iterator[httpx.Client]:
    """A client for event streams: reads time out if nothing (not even a heartbeat) comes."""
    with httpx.Client(
        base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=httpx.Timeout(5.0)
    ) as client:
        yield client


def ws_url(server: KilnServer, path: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}{path}" + (f"?{query}" if query else "")


def ws_connect(server: KilnServer, path: str, query: str = "") -> ClientConnection:
    basic = httpx.BasicAuth(*ADMIN_AUTH)._auth_header
    return connect(
        ws_url(server, path, query),
        additional_headers={"Authorization": basic},
        open_timeout=5,
    )


def ws_next(connection: ClientConnection) -> dict[str, Any]:
    return ws_event(connection)


# --------------------------------------------------------------------------- SSE


def test_record_stream_starts_with_the_record_then_every_change(
    http: httpx.Client, stream_client: httpx.Client
) -> None:
    dog = new_id()
    put(http, f"/Dog/{dog}", {"name": "Rex", "age": 3})
    with sse(stream_client, f"/Dog/{dog}") as stream:
        [first] = stream.history()
        assert first.type == "put"
        assert first.data["value"] == {"id": dog, "name": "Rex", "age": 3}
        assert first.id is None  # a current record is no resume point: the end of them is
        assert stream.last_event_id is not None
        assert int(stream.last_event_id) >= first.data["version"]
        put(http, f"/Dog/{dog}", {"name": "Rex", "age": 4})
        assert http.patch(f"/Dog/{dog}", json={"age": 5}).status_code == 204
        assert http.delete(f"/Dog/{dog}").status_code == 204
        replaced, patched, deleted = stream.take(3)
    assert (replaced.type, replaced.data["value"]["age"]) == ("put", 4)
    assert patched.type == "patch"
    assert patched.data["value"] == {"id": dog, "name": "Rex", "age": 5}
    assert patched.data["patch"] == {"age": 5}
    assert deleted.type == "delete"
    assert (deleted.data["id"], deleted.data["value"]) == (dog, None)
    assert [event.id for event in (replaced, patched, deleted)] == [
        str(event.data["version"]) for event in (replaced, patched, deleted)
    ]
    versions = [event.data["version"] for event in (first, replaced, patched, deleted)]
    assert versions == sorted(versions) and len(set(versions)) == 4


def test_missing_record_stream_has_an_empty_history(
    http: httpx.Client, stream_client: httpx.Client
) -> None:
    dog = new_id()
    with sse(stream_client, f"/Dog/{dog}") as stream:
        assert stream.history() == []
        put(http, f"/Dog/{dog}", {"name": "Late"})
        event = stream.next()
    assert (event.type, event.data["value"]["name"]) == ("put", "Late")


def test_collection_and_prefix_streams(http: httpx.Client, stream_client: httpx.Client) -> None:
    prefix = new_id("p") + "/"
    inside, outside = prefix + "a", new_id("q")
    put(http, f"/Dog/{inside}", {"name": "In"})
    with (
        sse(stream_client, "/Dog/") as everything,
        sse(stream_client, f"/Dog/{prefix}") as by_prefix,
    ):
        current = {event.data["id"] for event in everything.history()}
        assert inside in current
        assert [event.data["id"] for event in by_prefix.history()] == [inside]
        put(http, f"/Dog/{outside}", {"name": "Out"})
        put(http, f"/Dog/{prefix}b", {"name": "In too"})
        seen = [event.data["id"] for event in everything.take(2)]
        assert seen == [outside, prefix + "b"]
        assert by_prefix.next().data["id"] == prefix + "b"


def test_omit_current_skips_the_history(http: httpx.Client, stream_client: httpx.Client) -> None:
    dog = new_id()
    put(http, f"/Dog/{dog}", {"name": "Old"})
    with sse(stream_client, f"/Dog/{dog}?omitCurrent") as stream:
        assert stream.history() == []
        put(http, f"/Dog/{dog}", {"name": "New"})
        assert stream.next().data["value"]["name"] == "New"


def test_last_event_id_resumes_with_exactly_what_was_missed(
    http: httpx.Client, stream_client: httpx.Client
) -> None:
    dog = new_id()
    put(http, f"/Dog/{dog}", {"name": "v0"})
    with sse(stream_client, f"/Dog/{dog}") as stream:
        stream.history()
        put(http, f"/Dog/{dog}", {"name": "v1"})
        stream.next()
        resume_from = stream.last_event_id
    for n in (2, 3, 4):
        put(http, f"/Dog/{dog}", {"name": f"v{n}"})
    with sse(stream_client, f"/Dog/{dog}", {"last-event-id": resume_from}) as stream:
        replayed = stream.history()
        assert [event.data["value"]["name"] for event in replayed] == ["v2", "v3", "v4"]
        put(http, f"/Dog/{dog}", {"name": "v5"})
        assert stream.next().data["value"]["name"] == "v5"


def test_a_stream_cut_among_the_current_records_starts_them_over(
    http: httpx.Client, stream_client: httpx.Client
) -> None:
    """The current records come in key order, not version order: were each one's version
    its id, a stream cut after the first would resume past the older records not yet sent,
    and lose them. Only the end of the history is a resume point."""
    prefix = new_id("cut") + "/"
    for name in ("b", "c", "a"):  # key order a, b, c; version order b, c, a
        put(http, f"/Dog/{prefix}{name}", {"name": name})
    with sse(stream_client, f"/Dog/{prefix}") as stream:
        first = stream.next()  # the browser's Last-Event-ID when the stream is cut here
        cut_at = stream.last_event_id
    assert first.data["id"] == prefix + "a" and cut_at is None
    with sse(stream_client, f"/Dog/{prefix}") as stream:  # reconnected without the header
        history = stream.history()
        synced = stream.last_event_id
    assert [event.data["id"] for event in history] == [prefix + n for n in ("a", "b", "c")]
    assert all(event.id is None for event in history)
    assert synced is not None and int(synced) >= max(e.data["version"] for e in history)
    put(http, f"/Dog/{prefix}d", {"name": "d"})
    with sse(stream_client, f"/Dog/{prefix}", {"last-event-id": synced}) as stream:
        assert [event.data["id"] for event in stream.history()] == [prefix + "d"]


def test_start_time_and_previous_count(http: httpx.Client, stream_client: httpx.Client) -> None:
    dog = new_id()
    for n in range(5):
        put(http, f"/Dog/{dog}", {"name": f"v{n}"})
    with sse(stream_client, f"/Dog/{dog}?previousCount=3") as stream:
        last_three = stream.history()
    assert [event.data["value"]["name"] for event in last_three] == ["v2", "v3", "v4"]
    # a replay comes in version order: each write is a resume point, so it carries its id
    assert [event.id for event in last_three] == [str(e.data["version"]) for e in last_three]
    since = last_three[0].id
    with sse(stream_client, f"/Dog/{dog}?startTime={since}") as stream:
        assert [event.data["value"]["name"] for event in stream.history()] == ["v3", "v4"]


def test_bad_subscription_parameters_are_400(stream_client: httpx.Client) -> None:
    response = stream_client.get(
        "/Dog/?startTime=yesterday", headers={"accept": "text/event-stream"}
    )
    assert response.status_code == 400
    assert "startTime" in response.json()["detail"]
    response = stream_client.get(
        "/Dog/", headers={"accept": "text/event-stream", "last-event-id": "abc"}
    )
    assert response.status_code == 400
    assert "Last-Event-ID must be a whole number" in response.json()["detail"]
    response = stream_client.get(
        "/Dog/?previousCount=10001", headers={"accept": "text/event-stream"}
    )
    assert response.status_code == 400
    assert "previousCount may be at most 10000" in response.json()["detail"]
    response = stream_client.get("/Dog/?name=Rex", headers={"accept": "text/event-stream"})
    assert response.status_code == 400
    assert "query conditions" in response.json()["detail"]
    response = stream_client.get("/Counter/1/", headers={"accept": "text/event-stream"})
    assert response.status_code == 404
    assert "only string keys have prefixes" in response.json()["detail"]


def test_heartbeats_keep_an_idle_stream_alive(stream_client: httpx.Client) -> None:
    with sse(stream_client, f"/Dog/{new_id()}?omitCurrent") as stream:
        stream.history()
        before = stream.comments
        deadline = time.monotonic() + 3
        while stream.comments < before + 2 and time.monotonic() < deadline:
            line = next(stream._lines)
            if line.startswith(":"):
                stream.comments += 1
    assert stream.comments >= before + 2


def test_subscription_permission_hook_is_asked(stream_client: httpx.Client) -> None:
    response = stream_client.get(f"/Secret/{new_id()}", headers={"accept": "text/event-stream"})
    assert response.status_code == 403
    assert "subscribe" in response.json()["detail"]


def test_a_slow_subscriber_is_closed_and_others_carry_on(
    kiln_server: KilnServer, http: httpx.Client, stream_client: httpx.Client
) -> None:
    """``Slow`` reads one event per 0.2 s; with a queue of 5 it falls behind and is closed.

    The other subscriber reads 30 events promptly, so a queue of 5 suffices for it.
    """
    dog = new_id()
    put(http, f"/Dog/{dog}", {"name": "start", "age": 0})
    with (
        sse(stream_client, f"/Slow/{dog}?omitCurrent") as slow,
        sse(stream_client, f"/Dog/{dog}?omitCurrent") as fast,
    ):
        slow.history()
        fast.history()
        started = time.monotonic()
        for n in range(1, 31):
            put(http, f"/Dog/{dog}", {"name": "tick", "age": n})
        writing = time.monotonic() - started
        ages = [event.data["value"]["age"] for event in fast.take(30)]
        assert ages == list(range(1, 31))
        received = []
        while True:
            event = slow.next()
            received.append(event)
            if event.type == "error":
                break
        with pytest.raises(EOFError):
            slow.next()
    assert "fell more than" in received[-1].data["value"]
    assert len(received) < 30
    assert writing < 0.2 * 30  # the writes never waited for the slow reader


# --------------------------------------------------------------------------- concurrency


def test_catch_up_joins_the_live_stream_under_concurrent_writes(
    kiln_server: KilnServer, stream_client: httpx.Client
) -> None:
    """A replay from ``startTime`` taken mid-stream sees each later write exactly once."""
    prefix = new_id("c") + "/"
    stop = threading.Event()

    def write_forever() -> None:
        with httpx.Client(base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=10) as client:
            n = 0
            while not stop.is_set():
                n += 1
                client.put(f"/Dog/{prefix}{n % 7}", json={"name": "w", "age": n})

    with sse(stream_client, f"/Dog/{prefix}?omitCurrent") as reference:
        reference.history()
        writer = threading.Thread(target=write_forever)
        writer.start()
        try:
            seen = reference.take(40)
            since = seen[20].id
            with sse(stream_client, f"/Dog/{prefix}", {"last-event-id": since}) as late:
                caught_up = late.history() + late.take(60)
            seen += reference.take(100)
        finally:
            stop.set()
            writer.join()
    reference_ids = [event.data["version"] for event in seen]
    late_ids = [event.data["version"] for event in caught_up]
    assert len(set(late_ids)) == len(late_ids)  # nothing doubled
    start = reference_ids.index(int(since)) + 1
    assert late_ids == reference_ids[start : start + len(late_ids)]  # nothing missed


# --------------------------------------------------------------------------- WebSocket


def test_websocket_record_subscription(kiln_server: KilnServer, http: httpx.Client) -> None:
    dog = new_id()
    put(http, f"/Dog/{dog}", {"name": "Ws"})
    with ws_connect(kiln_server, f"/Dog/{dog}") as connection:
        first = ws_next(connection)
        assert (first["type"], first["id"], first["value"]["name"]) == ("put", dog, "Ws")
        assert http.patch(f"/Dog/{dog}", json={"age": 2}).status_code == 204
        patched = ws_next(connection)
    assert patched["type"] == "patch"
    assert patched["patch"] == {"age": 2}
    assert patched["value"] == {"id": dog, "name": "Ws", "age": 2}
    assert patched["version"] > first["version"]


def test_a_websocket_client_closing_normally_logs_no_error(
    kiln_server: KilnServer, http: httpx.Client
) -> None:
    """A client closing its WebSocket is normal: it must not log an ERROR with an error id
    (closing a subscription that is a generator, as an override's is, while the pump was
    still inside it did, on every close)."""
    dog = new_id()
    put(http, f"/Dog/{dog}", {"name": "Bye"})
    before = len(kiln_server.log())
    for _ in range(3):
        with ws_connect(kiln_server, f"/Slow/{dog}") as connection:
            assert ws_next(connection)["value"]["name"] == "Bye"
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # the server ends each connection after the close
        assert "ERROR" not in kiln_server.log()[before:], kiln_server.log()[before:]
        time.sleep(0.1)


def test_websocket_resumes_from_its_sync_frame(kiln_server: KilnServer, http: httpx.Client) -> None:
    """A ``sync`` frame ends the current records: its version is where ``?startTime=``
    resumes, with exactly the writes missed (a message's or a current record's version is
    no resume point: see the README)."""
    prefix = new_id("wsr") + "/"
    for name in ("b", "a"):
        put(http, f"/Dog/{prefix}{name}", {"name": name})
    with ws_connect(kiln_server, f"/Dog/{prefix}") as connection:
        frames = [json.loads(connection.recv(timeout=5)) for _ in range(3)]
    assert [frame["type"] for frame in frames] == ["put", "put", "sync"]
    sync = frames[2]
    assert sync["id"] is None and sync["version"] >= max(f["version"] for f in frames[:2])
    put(http, f"/Dog/{prefix}a", {"name": "a2"})
    put(http, f"/Dog/{prefix}c", {"name": "c"})
    with ws_connect(kiln_server, f"/Dog/{prefix}", f"startTime={sync['version']}") as resumed:
        replayed = [json.loads(resumed.recv(timeout=5)) for _ in range(3)]
    assert [(f["type"], f["id"]) for f in replayed] == [
        ("put", prefix + "a"),
        ("put", prefix + "c"),
        ("sync", None),
    ]


def test_a_websocket_message_over_the_body_limit_is_refused_and_not_published(
    kiln_server: KilnServer, http: httpx.Client, stream_client: httpx.Client
) -> None:
    """http.maxBodySize holds for WebSocket messages as for request bodies: a larger one is
    answered with a 413 error frame and reaches nobody; the connection stays open."""
    dog = new_id()
    put(http, f"/Dog/{dog}", {"name": "Big"})
    with (
        sse(stream_client, f"/Dog/{dog}?omitCurrent") as listener,
        ws_connect(kiln_server, f"/Dog/{dog}", "omitCurrent") as connection,
    ):
        listener.history()
        connection.send(json.dumps({"blob": "x" * MAX_BODY}))
        refusal = ws_next(connection)
        assert (refusal["type"], refusal["status"]) == ("error", 413)
        assert "http.maxBodySize" in refusal["value"]
        wide = "\N{GRINNING FACE}" * (MAX_BODY // 3)  # fewer characters than the limit's bytes
        connection.send(json.dumps(wide, ensure_ascii=False))
        refusal = ws_next(connection)
        assert (refusal["type"], refusal["status"]) == ("error", 413)
        assert f"a message of {len(wide.encode()) + 2} bytes" in refusal["value"]
        connection.send(json.dumps({"small": True}))
        assert ws_next(connection)["value"] == {"small": True}
        assert listener.next().data["value"] == {"small": True}  # the big one never came


def test_websocket_messages_reach_sse_and_leave_the_record_alone(
    kiln_server: KilnServer, http: httpx.Client, stream_client: httpx.Client
) -> None:
    dog = new_id()
    put(http, f"/Dog/{dog}", {"name": "Quiet"})
    with (
        sse(stream_client, f"/Dog/{dog}?omitCurrent") as stream,
        ws_connect(kiln_server, f"/Dog/{dog}", "omitCurrent") as connection,
    ):
        stream.history()
        connection.send(json.dumps({"say": "hello"}))
        connection.send("plain text")
        heard = stream.take(2)
        echoed = ws_next(connection)
    assert [(event.type, event.data["value"]) for event in heard] == [
        ("message", {"say": "hello"}),
        ("message", "plain text"),
    ]
    assert (echoed["type"], echoed["value"]) == ("message", {"say": "hello"})
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Quiet"}
    # a message is logged (after it is sent, without waiting for the commit): a replay
    # includes it once that commit is in
    deadline = time.monotonic() + 5
    while True:
        with sse(stream_client, f"/Dog/{dog}?previousCount=2") as stream:
            replayed = [event.type for event in stream.history()]
        if replayed == ["message", "message"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert replayed == ["message", "message"]


def test_resource_publish_reaches_websocket_and_sse(
    kiln_server: KilnServer, http: httpx.Client, stream_client: httpx.Client
) -> None:
    room = new_id()
    with (
        sse(stream_client, f"/Room/{room}") as stream,
        ws_connect(kiln_server, f"/Room/{room}") as connection,
    ):
        assert stream.history() == []
        response = http.post(f"/Room/{room}", json={"text": "hi"})
        assert response.status_code == 200, response.text
        assert ws_next(connection)["value"] == {"text": "hi"}
        assert stream.next().data["value"] == {"text": "hi"}


def test_websocket_refusals_send_the_problem_then_close(kiln_server: KilnServer) -> None:
    for path, status in [("/Nope/1", 404), (f"/Secret/{new_id()}", 403), ("/Dog", 404)]:
        with ws_connect(kiln_server, path) as connection:
            message = ws_next(connection)
            assert (message["type"], message["status"]) == ("error", status)
            assert message["value"]
            with pytest.raises(ConnectionClosed):
                connection.recv(timeout=5)


def test_server_survives_garbage_frames(kiln_server: KilnServer, http: httpx.Client) -> None:
    dog = new_id()
    with ws_connect(kiln_server, f"/Dog/{dog}", "omitCurrent") as connection:
        connection.send(b"\xff\x00 not json")
        refusal = ws_next(connection)
        assert (refusal["type"], refusal["status"]) == ("error", 400)
        put(http, f"/Dog/{dog}", {"name": "still here"})
        assert ws_next(connection)["value"]["name"] == "still here"
    assert http.get("/_health").status_code == 200


def test_sigterm_ends_open_streams_and_stops_promptly(tmp_path: Path) -> None:
    """granian waits for requests in flight: the subscriptions must end first."""
    server = KilnServer(write_app(tmp_path / "app", SCHEMA), tmp_path / "data", free_port())
    server.start()
    try:
        with (
            httpx.Client(base_url=server.url, auth=ADMIN_AUTH, timeout=5) as client,
            sse(client, "/Dog/") as stream,
            ws_connect(server, "/Dog/x") as connection,
        ):
            stream.history()
            started = time.monotonic()
            assert server.stop(signal.SIGTERM, timeout=10) == 0
            assert time.monotonic() - started < 5
            with pytest.raises(EOFError):
                stream.next()
            with pytest.raises(ConnectionClosed):
                ws_event(connection)
    finally:
        server.stop(signal.SIGKILL)


def test_a_message_to_a_collection_socket_is_answered_with_an_error(
    kiln_server: KilnServer, http: httpx.Client
) -> None:
    """Tables take messages per record: on a collection the client hears why, and the socket
    keeps delivering changes."""
    dog = new_id()
    with ws_connect(kiln_server, "/Dog/", "omitCurrent") as connection:
        connection.send(json.dumps({"say": "to everyone"}))
        refusal = ws_next(connection)
        assert refusal["type"] == "error"
        assert "publishing needs a record URL" in refusal["value"]
        put(http, f"/Dog/{dog}", {"name": "after"})
        assert ws_next(connection)["value"]["name"] == "after"


def test_an_async_publish_is_awaited(kiln_server: KilnServer) -> None:
    with ws_connect(kiln_server, f"/Echo/{new_id()}") as connection:
        connection.send(json.dumps("hi"))
        heard = ws_next(connection)
    assert (heard["type"], heard["value"]) == ("message", {"echo": "hi"})
