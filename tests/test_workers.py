"""``http.workers``: several processes serving HTTP on one port, sharing one LMDB database.

With two workers the main process (worker 1) starts two children: worker 2
(``python -m kiln.spawned serve ...``), which serves HTTP on the same port, and the write
process (``python -m kiln.spawned write ...``), which applies every worker's writes (but a
``DELETE`` by query, which the worker's own writer applies) and relays the change bus.

Every test runs real ``kiln run`` subprocesses with ``KILN_HTTP_WORKERS=2`` and talks to them
over sockets. The kernel spreads new connections across the workers (SO_REUSEPORT), and
``/_health`` says which worker answered, so :func:`on_worker` makes a client whose one kept-alive
connection is on a chosen worker (and fails loudly if that connection is ever replaced), and
:func:`ws_on_worker` does the same for a WebSocket (the upgrade goes over a connection whose
``/_health`` was answered by that worker). One server serves the tests that leave it running;
the shutdown and crash tests start their own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from conftest import ADMIN_AUTH, KilnServer, free_port, write_app, ws_event
from protocols.mqtt_clients import Paho
from protocols.realtime_clients import sse

SCHEMA = """
type Dog @table @export {
  id: ID @primaryKey
  name: String
  age: Int
  breed: String @indexed
}

type Tick @table @export {
  id: Int @primaryKey
  n: Int
  worker: Int
}

type Load @table @export {
  id: ID @primaryKey
  n: Int
}

type Member @table @export {
  id: ID @primaryKey
  email: String @unique
  name: String!
  age: Int
}

type Person @table @export {
  id: ID @primaryKey
  first: String!
  last: String
  fullName: String @computed(version: 1) @indexed
}
"""

RESOURCES = """
from kiln import tables


class Boom(Exception):
    def __init__(self, code, text):
        super().__init__(f"{code}: {text}")


@tables.Person.computed("fullName")
def full_name(record):
    if record["first"] == "boom":
        raise Boom(7, "an error pickle cannot rebuild (its __init__ takes two arguments)")
    return f"{record['first']} {record.get('last') or ''}".strip()
"""
"""``Person.fullName``'s function: the write process must import it to index what it writes.
For ``first: "boom"`` it raises an error of the app's own that does not survive a pickle."""

CONFIG = """
realtime:
  heartbeat: 500ms
"""

CONFIG_PORT = free_port()
"""The port ``config.yaml`` of the module's server names; ``--port`` must win in every worker."""

OVERRIDDEN = f"""
http:
  port: {CONFIG_PORT}
storage:
  path: not-the-data
"""
"""What the module's server has in ``config.yaml`` besides :data:`CONFIG`: settings that the
command line (``--port``, ``--data``) overrides, in worker 1 and in the workers it starts."""

WORKERS = 2
WORKERS_ENV = {"KILN_HTTP_WORKERS": str(WORKERS)}
WAIT = 10.0
"""Seconds to wait for anything the server should do by itself (an event, an exit)."""

_ids = itertools.count(1)


def new_id(prefix: str = "d") -> str:
    """A record id no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:8]}-{next(_ids)}"


# --------------------------------------------------------------------------- processes


def _stat(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie has ended)."""
    stat = _stat(pid)
    return stat is not None and stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> set[int]:
    """The processes ``pid`` started itself (its direct children), read from /proc."""
    found: set[int] = set()
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.update(map(int, listing.read_text().split()))
    return found


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...), read from /proc."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children(pending.pop()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def role(pid: int) -> list[str] | None:
    """What follows ``-m kiln.spawned`` in ``pid``'s command line (``["write", ...]`` or
    ``["serve", ..., NUMBER, FD]``); None for any other process."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return None
    if "kiln.spawned" not in argv:
        return None
    return argv[argv.index("kiln.spawned") + 1 :]


def crew(main: int) -> dict[str, list[int]]:
    """The children of the main process ``main``, by role: ``write``, ``serve`` or ``other``."""
    found: dict[str, list[int]] = {}
    for pid in sorted(children(main)):
        argv = role(pid)
        kind = argv[0] if argv and argv[0] in ("write", "serve") else "other"
        found.setdefault(kind, []).append(pid)
    return found


def the_child(main: int, kind: str) -> int:
    """The pid of the one child of ``main`` started as ``python -m kiln.spawned KIND``."""
    found = crew(main)
    assert len(found.get(kind, [])) == 1, f"children of the main process by role: {found}"
    return found[kind][0]


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def listening(pids: set[int], port: int) -> set[int]:
    """Those of ``pids`` that hold a socket listening on ``port``."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    holders: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in sockets:
                        holders.add(pid)
                        break
    return holders


def _listening_sockets() -> set[str]:
    """Every listening socket of the network namespace, TCP or Unix, as ``socket:[INODE]``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    inodes.add(fields[9])
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[3], 16) & 0x10000:  # __SO_ACCEPTCON: listening
                inodes.add(fields[6])
    return {f"socket:[{inode}]" for inode in inodes}


def sockets_of(pid: int) -> set[str]:
    """The sockets ``pid`` holds open, as ``socket:[INODE]``."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:"):
                    found.add(target)
    return found


def refuses(port: int) -> bool:
    """Whether connecting to ``port`` on the loopback is refused (nothing listens)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def eventually(check: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``check`` until it holds or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def reap(pids: set[int]) -> None:
    """``kill -9`` whichever of ``pids`` (processes a test's server started) still run kiln."""
    for pid in pids:
        with contextlib.suppress(OSError):
            if alive(pid) and b"kiln" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


def main_pid(server: KilnServer) -> int:
    assert server.process is not None
    return server.process.pid


# --------------------------------------------------------------------------- workers


def health(server: KilnServer) -> dict[str, Any]:
    """``/_health`` over a fresh connection."""
    response = httpx.get(f"{server.url}/_health", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_workers(server: KilnServer, count: int = WORKERS, timeout: float = 20.0) -> None:
    """Wait until every worker 1..count has answered ``/_health`` over a fresh connection."""
    wanted = set(range(1, count + 1))
    seen: set[Any] = set()
    deadline = time.monotonic() + timeout
    while not wanted <= seen:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only workers {seen} answered /_health within {timeout}s:\n{server.log()}"
            )
        with contextlib.suppress(httpx.TransportError):
            seen.add(health(server).get("worker"))


class PinLost(AssertionError):
    """A pinned client's connection was replaced: the worker may have changed."""


class Pinned(httpx.Client):
    """A client already opened by the request that chose its worker; ``with`` closes it."""

    def __enter__(self) -> Pinned:
        return self


def _client_addr(response: httpx.Response) -> Any:
    stream = response.extensions.get("network_stream")
    return None if stream is None else stream.get_extra_info("client_addr")


def on_worker(
    server: KilnServer,
    worker: int,
    *,
    auth: tuple[str, str] | None = ADMIN_AUTH,
    timeout: float = 10.0,
    tries: int = 200,
) -> Pinned:
    """An httpx client whose single kept-alive connection ``worker`` serves.

    Every response is checked to have come over that same connection (same local address):
    if the server closed it and httpx opened another, the request raises :class:`PinLost`.
    """
    for _ in range(tries):
        pinned: list[Any] = []

        def check(response: httpx.Response, pinned: list[Any] = pinned) -> None:
            if pinned and _client_addr(response) != pinned[0]:
                raise PinLost(f"the connection to worker {worker} was replaced")

        client = Pinned(
            base_url=server.url,
            auth=auth,
            timeout=timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            event_hooks={"response": [check]},
        )
        response = client.get("/_health")
        if response.status_code == 200 and response.json().get("worker") == worker:
            pinned.append(_client_addr(response))
            return client
        client.close()
    raise AssertionError(f"no fresh connection reached worker {worker} in {tries} tries")


def _health_over(sock: socket.socket, port: int) -> dict[str, Any]:
    """``GET /_health`` on an open socket, keeping the connection open: the parsed body."""
    sock.sendall(f"GET /_health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert length is not None, head
    while len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        body += chunk
    return json.loads(body)


def ws_on_worker(server: KilnServer, worker: int, path: str, tries: int = 200) -> ClientConnection:
    """A WebSocket to ``path`` that ``worker`` serves: the upgrade is sent over a connection
    whose ``/_health`` that worker answered."""
    basic = httpx.BasicAuth(*ADMIN_AUTH)._auth_header
    for _ in range(tries):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        if _health_over(sock, server.port).get("worker") == worker:
            return ws_connect(
                f"ws://127.0.0.1:{server.port}{path}",
                sock=sock,
                additional_headers={"Authorization": basic},
                open_timeout=5,
            )
        sock.close()
    raise AssertionError(f"no fresh connection reached worker {worker} in {tries} tries")


CHILDREN: dict[int, set[int]] = {}
"""HTTP port → the child processes its server had once both workers answered."""


def start_server(app_dir: Path, data_dir: Path, started: list[KilnServer]) -> KilnServer:
    """Start ``kiln run`` with two workers on the folders and wait until both answer."""
    server = KilnServer(app_dir, data_dir, free_port(), env=dict(WORKERS_ENV))
    started.append(server)
    server.start()
    wait_for_workers(server)
    CHILDREN[server.port] = descendants(main_pid(server))
    return server


def shut_down(server: KilnServer, children: set[int]) -> None:
    """SIGTERM (then SIGKILL if it hangs) the server, and kill whatever of its children is left."""
    try:
        server.stop(signal.SIGTERM, timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    reap(children)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnServer]:
    """One two-worker server for the tests that leave it running."""
    root = tmp_path_factory.mktemp("workers")
    app_dir = write_app(root / "app", SCHEMA, CONFIG + OVERRIDDEN, RESOURCES)
    kiln = KilnServer(app_dir, root / "data", free_port(), env=dict(WORKERS_ENV))
    children: set[int] = set()
    try:
        kiln.start()
        wait_for_workers(kiln)
        children = descendants(main_pid(kiln))
        yield kiln
    finally:
        shut_down(kiln, children | (descendants(main_pid(kiln)) if kiln.process else set()))


@pytest.fixture()
def w1(server: KilnServer) -> Iterator[httpx.Client]:
    """A client served by worker 1 (the main process)."""
    with on_worker(server, 1) as client:
        yield client


@pytest.fixture()
def w2(server: KilnServer) -> Iterator[httpx.Client]:
    """A client served by worker 2."""
    with on_worker(server, 2) as client:
        yield client


@pytest.fixture()
def app_dirs(tmp_path: Path) -> tuple[Path, Path]:
    return write_app(tmp_path / "app", SCHEMA, CONFIG, RESOURCES), tmp_path / "data"


@pytest.fixture()
def started() -> Iterator[list[KilnServer]]:
    """The servers a test starts itself; at the end, each and every child of it is killed."""
    servers: list[KilnServer] = []
    yield servers
    for kiln in servers:
        children = descendants(main_pid(kiln)) if kiln.process else set()
        kiln.kill()
        reap(children | CHILDREN.pop(kiln.port, set()))


def put(client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = client.put(path, json=body)
    assert response.status_code == 204, response.text


# --------------------------------------------------------------------------- which worker answers


def test_health_names_the_worker_and_fresh_connections_reach_both(server: KilnServer) -> None:
    """``/_health`` says which of the 2 workers answered; fresh connections reach both."""
    seen: list[int] = []
    for _ in range(200):
        body = health(server)
        assert body["status"] == "ok"
        assert body["workers"] == WORKERS
        assert body["worker"] in (1, 2)
        seen.append(body["worker"])
        if set(seen) == {1, 2}:
            break
    assert set(seen) == {1, 2}, f"200 fresh connections only reached workers {set(seen)}"


def test_a_kept_alive_connection_stays_on_its_worker(server: KilnServer) -> None:
    """Every request over one kept-alive connection is answered by the same worker."""
    for worker in (1, 2):
        with on_worker(server, worker) as client:
            answers = {client.get("/_health").json()["worker"] for _ in range(20)}
        assert answers == {worker}


def test_only_the_main_process_runs_the_broker(server: KilnServer) -> None:
    """Two processes listen on the HTTP port; only the main one on the MQTT ports."""
    main = main_pid(server)
    family = {main} | descendants(main)
    http_listeners = listening(family, server.port)
    assert main in http_listeners
    assert len(http_listeners) == WORKERS, f"processes listening on HTTP: {http_listeners}"
    assert listening(family, server.mqtt_port) == {main}
    assert listening(family, server.mqtt_ws_port) == {main}


def test_the_main_process_starts_worker_2_and_the_write_process(server: KilnServer) -> None:
    """Main has two children, ``kiln.spawned serve`` (worker 2) and ``kiln.spawned write``;
    only main and worker 2 listen on the HTTP port, and the write process on nothing."""
    main = main_pid(server)
    found = crew(main)
    assert sorted(found) == ["serve", "write"], f"children of the main process: {found}"
    assert [len(pids) for pids in found.values()] == [1, 1], found
    [writer], [worker_2] = found["write"], found["serve"]
    serve_argv = role(worker_2)
    assert serve_argv is not None and serve_argv[1] == str(server.app_dir), serve_argv
    assert serve_argv[3] == "2", f"worker 2 was started as {serve_argv}"
    write_argv = role(writer)
    assert write_argv is not None and write_argv[1] == str(server.app_dir), write_argv
    assert listening({main, writer, worker_2}, server.port) == {main, worker_2}
    listeners = _listening_sockets()
    assert sockets_of(main) & listeners, "the check sees no listening socket of the main process"
    assert sockets_of(writer), "the write process holds no socket: where are its links?"
    assert sockets_of(writer) & listeners == set(), "the write process listens on a socket"
    assert descendants(writer) == set() and descendants(worker_2) == set()


def test_command_line_options_reach_every_worker(server: KilnServer, w2: httpx.Client) -> None:
    """``--port`` and ``--data`` beat ``config.yaml`` in worker 2 too: one port, one database."""
    assert w2.get("/_health").json()["worker"] == 2  # on the --port port
    put(w2, f"/Dog/{new_id()}", {"name": "where"})
    assert not (server.app_dir / "not-the-data").exists()
    main = main_pid(server)
    assert listening({main} | descendants(main), CONFIG_PORT) == set()


# --------------------------------------------------------------------------- one database


def test_a_write_on_one_worker_is_read_at_once_on_the_other(
    w1: httpx.Client, w2: httpx.Client
) -> None:
    """A PUT acknowledged by either worker is what the other reads right after."""
    for n in range(60):
        writer, reader = (w1, w2) if n % 2 == 0 else (w2, w1)
        dog = new_id()
        put(writer, f"/Dog/{dog}", {"name": f"dog-{n}", "age": n})
        response = reader.get(f"/Dog/{dog}")
        assert response.status_code == 200, (n, response.text)
        assert response.json() == {"id": dog, "name": f"dog-{n}", "age": n}


def test_an_update_on_one_worker_replaces_what_the_other_read_before(
    w1: httpx.Client, w2: httpx.Client
) -> None:
    """A worker that has read a record sees the other's update at once: new body, new ETag."""
    dog = new_id()
    put(w1, f"/Dog/{dog}", {"name": "v0", "age": 0})
    for n in range(1, 21):
        writer, reader = (w1, w2) if n % 2 else (w2, w1)
        before = reader.get(f"/Dog/{dog}")
        assert before.status_code == 200
        if n % 3:
            put(writer, f"/Dog/{dog}", {"name": f"v{n}", "age": n})
        else:
            assert writer.patch(f"/Dog/{dog}", json={"name": f"v{n}", "age": n}).status_code == 204
        after = reader.get(f"/Dog/{dog}", headers={"if-none-match": before.headers["etag"]})
        assert after.status_code == 200, f"step {n}: the reader still had {before.json()}"
        assert after.json() == {"id": dog, "name": f"v{n}", "age": n}
        assert after.headers["etag"] != before.headers["etag"]
        assert writer.get(f"/Dog/{dog}").headers["etag"] == after.headers["etag"]


def test_post_on_one_worker_delete_on_the_other(w1: httpx.Client, w2: httpx.Client) -> None:
    """A record POSTed through one worker is deleted through the other, then gone on both."""
    for creator, deleter in ((w1, w2), (w2, w1)):
        created = creator.post("/Dog/", json={"name": "brief"})
        assert created.status_code == 201, created.text
        path = created.headers["location"]
        assert deleter.get(path).json() == created.json()
        assert deleter.delete(path).status_code == 204
        assert creator.get(path).status_code == 404
        assert deleter.get(path).status_code == 404
        assert creator.delete(path).status_code == 404


def test_concurrent_writes_get_unique_versions_and_every_stream_sees_each_once(
    server: KilnServer,
) -> None:
    """Concurrent PUTs through both workers: distinct ETags, increasing per writer, and an SSE
    stream on each worker hears every write exactly once, in strictly increasing id order."""
    per_thread, threads_per_worker = 40, 4
    writers = [on_worker(server, worker) for worker in (1, 2) for _ in range(threads_per_worker)]
    readers = [on_worker(server, worker) for worker in (1, 2)]
    written: dict[int, list[int]] = {}

    def write(thread: int) -> None:
        client = writers[thread]
        keys = [thread * 1000 + n for n in range(per_thread)]
        for key in keys:
            put(client, f"/Tick/{key}", {"n": key, "worker": 1 + thread // threads_per_worker})
        written[thread] = keys

    try:
        with contextlib.ExitStack() as stack:
            streams = [stack.enter_context(sse(reader, "/Tick/?omitCurrent")) for reader in readers]
            for stream in streams:
                assert stream.history() == []
            with ThreadPoolExecutor(len(writers)) as pool:
                list(pool.map(write, range(len(writers))))
            total = per_thread * len(writers)

            versions: dict[int, int] = {}
            for thread, keys in written.items():
                other = writers[0 if thread >= threads_per_worker else threads_per_worker]
                for key in keys:
                    response = other.get(f"/Tick/{key}")  # read on the worker that did not write
                    assert response.status_code == 200, response.text
                    versions[key] = int(response.headers["etag"].strip('"'))
                order = [versions[key] for key in keys]
                assert order == sorted(order), (
                    f"thread {thread}: a later write got an older version"
                )
            assert len(versions) == total
            assert len(set(versions.values())) == total, "two writes share a version"

            put(writers[0], "/Tick/999999", {"n": -1, "worker": 1})  # the end marker
            for worker, stream in zip((1, 2), streams, strict=True):
                events = stream.take(total + 1)
                ids = [int(event.id) for event in events]
                assert all(b > a for a, b in itertools.pairwise(ids)), (
                    f"stream on worker {worker}: event ids not strictly increasing"
                )
                assert [event.id for event in events] == [str(e.data["version"]) for e in events]
                assert {event.type for event in events} == {"put"}
                assert events[-1].data["id"] == 999999, f"stream on worker {worker}: extra events"
                heard = [(event.data["id"], event.data["version"]) for event in events[:-1]]
                assert len(heard) == len(dict(heard)), f"worker {worker} heard a write twice"
                assert dict(heard) == versions, f"worker {worker} missed or misreported writes"
    finally:
        for client in writers + readers:
            client.close()


# --------------------------------------------------------------------------- the write process


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem document of an error ``response``, which must have ``status``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response
    body = response.json()
    assert body["status"] == status, body
    return body


def test_concurrent_writes_of_one_unique_value_through_both_workers(server: KilnServer) -> None:
    """Eight clients, four per worker, race to give their own record one ``@unique`` email,
    round after round: each round exactly one wins; the others get a 409 naming the attribute
    and the winner, and their records do not exist."""
    rounds, per_worker = 20, 4
    clients = [on_worker(server, worker) for worker in (1, 2) for _ in range(per_worker)]
    barrier = threading.Barrier(len(clients))
    prefix = new_id("m")
    statuses: dict[tuple[int, int], httpx.Response] = {}

    def race(number: int) -> None:
        for n in range(rounds):
            barrier.wait(timeout=WAIT)
            body = {"email": f"{prefix}-{n}@example.com", "name": f"client {number}"}
            statuses[number, n] = clients[number].put(f"/Member/{prefix}-{n}-{number}", json=body)

    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(race, range(len(clients))))
        for n in range(rounds):
            email = f"{prefix}-{n}@example.com"
            answers = {number: statuses[number, n] for number in range(len(clients))}
            winners = [number for number, answer in answers.items() if answer.status_code == 204]
            assert len(winners) == 1, {k: (a.status_code, a.text) for k, a in answers.items()}
            winner = f"{prefix}-{n}-{winners[0]}"
            for number, answer in answers.items():
                if number != winners[0]:
                    detail = problem(answer, 409)["detail"]
                    assert "Member.email is @unique" in detail, detail
                    assert f"Member {winner!r} already has email '{email}'" in detail, detail
            for worker in (0, per_worker):  # a client of worker 1, then one of worker 2
                reader = clients[worker]
                found = reader.get(f"/Member/?email={email}&select(id)")
                assert found.json() == [winner], (worker, found.text)
                for number in answers:
                    if number != winners[0]:
                        assert reader.get(f"/Member/{prefix}-{n}-{number}").status_code == 404
    finally:
        for client in clients:
            client.close()


def test_errors_of_the_write_process_reach_either_worker_intact(
    w1: httpx.Client, w2: httpx.Client
) -> None:
    """A stale ``If-Match`` is a 412 and a PATCH of a missing record a 404 on both workers; an
    invalid record a 400 there; and none of them changes what is stored."""
    member = new_id("m")
    email = f"{member}@example.com"
    put(w1, f"/Member/{member}", {"email": email, "name": "v1", "age": 1})
    stale = w2.get(f"/Member/{member}").headers["etag"]
    put(w2, f"/Member/{member}", {"email": email, "name": "v2", "age": 2})
    current = w1.get(f"/Member/{member}")
    stored = {"id": member, "email": email, "name": "v2", "age": 2}
    assert current.json() == stored
    assert current.headers["etag"] != stale
    for worker, client in ((1, w1), (2, w2)):
        if_match = {"if-match": stale}
        body = {"email": email, "name": f"stale {worker}"}
        problem(client.put(f"/Member/{member}", json=body, headers=if_match), 412)
        problem(client.patch(f"/Member/{member}", json={"age": 9}, headers=if_match), 412)
        problem(client.delete(f"/Member/{member}", headers=if_match), 412)

        missing = new_id("missing")
        problem(client.patch(f"/Member/{missing}", json={"age": 3}), 404)
        assert client.get(f"/Member/{missing}").status_code == 404  # the PATCH created nothing

        invalid = problem(client.put(f"/Member/{member}", json={"email": email, "age": "x"}), 400)
        assert {error["path"] for error in invalid["errors"]} == {"$.name", "$.age"}, invalid
        problem(client.patch(f"/Member/{member}", json={"age": "old"}), 400)
        for reader in (w1, w2):
            again = reader.get(f"/Member/{member}")
            assert again.json() == stored, f"worker {worker}'s refused writes changed the record"
            assert again.headers["etag"] == current.headers["etag"]
    # the checks above do not refuse everything: the current ETag is accepted on both
    for age, (writer, reader) in enumerate(((w2, w1), (w1, w2)), start=3):
        etag = {"if-match": reader.get(f"/Member/{member}").headers["etag"]}
        response = writer.patch(f"/Member/{member}", json={"age": age}, headers=etag)
        assert response.status_code == 204, response.text
        assert reader.get(f"/Member/{member}").json() == {**stored, "age": age}


def test_delete_by_query_on_worker_2_while_the_write_process_writes(server: KilnServer) -> None:
    """``DELETE /Dog/?breed=X`` on worker 2 (its own writer) while worker 1 keeps writing
    (through the write process): exactly the matches are gone on worker 1, and a stream there
    hears one delete per match, every event in increasing version order."""
    breed, other, busy = new_id("breed"), new_id("breed"), new_id("breed")
    matching = [new_id() for _ in range(12)]
    others = [new_id() for _ in range(5)]
    with (
        on_worker(server, 1) as w1,
        on_worker(server, 2) as w2,
        on_worker(server, 1) as background,
        on_worker(server, 1) as r1,
        sse(r1, "/Dog/?omitCurrent") as stream,
    ):
        stream.history()
        for n, dog in enumerate(matching + others):
            client = (w1, w2)[n % 2]
            put(client, f"/Dog/{dog}", {"name": dog, "breed": breed if dog in matching else other})
        stop = threading.Event()
        written: list[str] = []

        def keep_writing() -> None:
            while not stop.is_set() or len(written) < 20:
                dog = new_id()
                put(background, f"/Dog/{dog}", {"name": dog, "breed": busy})
                written.append(dog)

        with ThreadPoolExecutor(1) as pool:
            writing = pool.submit(keep_writing)
            assert eventually(lambda: len(written) >= 5), "the background writer is stuck"
            deleted = w2.delete(f"/Dog/?breed={breed}")
            stop.set()
            writing.result(timeout=WAIT)
        assert (deleted.status_code, deleted.json()) == (200, {"deleted": len(matching)})

        for dog in matching:
            assert w1.get(f"/Dog/{dog}").status_code == 404, dog
        for dog in others + written:
            assert w1.get(f"/Dog/{dog}").status_code == 200, dog
        assert w1.get(f"/Dog/?breed={breed}").json() == []
        assert len(w1.get(f"/Dog/?breed={other}").json()) == len(others)
        assert len(w1.get(f"/Dog/?breed={busy}").json()) == len(written)

        end = new_id("end")
        put(w2, f"/Dog/{end}", {"name": "end"})
        events = []
        while not events or events[-1].data["id"] != end:
            events.append(stream.next())
    deletes = [event.data["id"] for event in events if event.type == "delete"]
    assert sorted(deletes) == sorted(matching), f"deletes heard on worker 1: {deletes}"
    puts = [event.data["id"] for event in events if event.type == "put"]
    assert sorted(puts) == sorted([*matching, *others, *written, end]), "puts heard twice or lost"
    versions = [int(event.id) for event in events]
    assert all(b > a for a, b in itertools.pairwise(versions)), (
        "the stream's versions are not in increasing order across the two writers"
    )


def test_an_app_error_that_cannot_travel_is_a_500_not_a_hang(server: KilnServer) -> None:
    """An error raised by the app's own code in the write process, of a class pickle cannot
    rebuild in the worker, still answers the request: a 500 naming it, nothing written."""
    for worker in (1, 2):
        with on_worker(server, worker) as client:
            person = new_id("boom")
            response = client.put(f"/Person/{person}", json={"first": "boom"})
            body = problem(response, 500)
            assert "an error pickle cannot rebuild" in body["detail"], body
            assert client.get(f"/Person/{person}").status_code == 404
            put(client, f"/Person/{person}", {"first": "fine"})  # the worker goes on


def test_a_computed_index_holds_writes_through_either_worker(server: KilnServer) -> None:
    """``Person.fullName`` (``@computed @indexed``, its function in resources.py) indexes the
    records written through either worker, so a query on it finds them from both."""
    last = new_id("L")
    with on_worker(server, 1) as w1, on_worker(server, 2) as w2:
        put(w1, f"/Person/{last}-a", {"first": "Ann", "last": last})
        put(w2, f"/Person/{last}-b", {"first": "Bob", "last": last})
        assert (
            w1.post("/Person/", json={"id": f"{last}-c", "first": "Cy", "last": last}).status_code
            == 201
        )
        for reader in (w1, w2):
            for first, key in (("Ann", "a"), ("Bob", "b"), ("Cy", "c")):
                query = f"/Person/?fullName={first} {last}"
                plan = reader.get(f"{query}&explain()").json()
                assert plan["driver"]["attribute"] == "fullName", plan
                found = reader.get(f"{query}&select(id,fullName)")
                assert found.json() == [{"id": f"{last}-{key}", "fullName": f"{first} {last}"}]
        # a PATCH through the other worker moves the record in the index
        assert w2.patch(f"/Person/{last}-a", json={"first": "Di"}).status_code == 204
        assert w1.patch(f"/Person/{last}-b", json={"last": f"{last}x"}).status_code == 204
        for reader in (w1, w2):
            assert reader.get(f"/Person/?fullName=Ann {last}").json() == []
            assert reader.get(f"/Person/?fullName=Di {last}&select(id)").json() == [f"{last}-a"]
            assert reader.get(f"/Person/?fullName=Bob {last}").json() == []
            assert reader.get(f"/Person/?fullName=Bob {last}x&select(id)").json() == [f"{last}-b"]
            assert reader.get(f"/Person/?fullName=sw=Cy {last}&select(id)").json() == [f"{last}-c"]


def replayed_messages(server: KilnServer, worker: int, dog: str) -> list[Any]:
    """The messages in the last 10 logged events of ``/Dog/{dog}``, replayed on ``worker``."""
    with on_worker(server, worker) as client, sse(client, f"/Dog/{dog}?previousCount=10") as stream:
        replay = stream.history()
    return [event.data["value"] for event in replay if event.type == "message"]


@pytest.mark.parametrize(("sender", "replayer"), [(2, 1), (1, 2)])
def test_a_websocket_message_is_logged_once_and_replayed_on_the_other_worker(
    server: KilnServer, sender: int, replayer: int
) -> None:
    """A message sent into a WebSocket on one worker is logged (through the write process)
    exactly once: a ``previousCount`` replay on the other worker finds it."""
    dog = new_id()
    message = {"hello": f"from worker {sender}", "dog": dog}
    with ws_on_worker(server, sender, f"/Dog/{dog}?omitCurrent") as websocket:
        websocket.send(json.dumps(message))
        assert eventually(lambda: replayed_messages(server, replayer, dog) != []), (
            f"the message sent on worker {sender} never showed in a replay on worker {replayer}"
        )
    assert replayed_messages(server, replayer, dog) == [message]
    assert replayed_messages(server, sender, dog) == [message]


def test_many_concurrent_writes_through_both_workers_each_logged_once(server: KilnServer) -> None:
    """8 clients (4 per worker), 100 PUTs each, over 10 records each: all acknowledged, both workers
    read each record's last value, and a ``startTime=0`` replay has every write once, in
    increasing version order, each client's writes in the order it made them."""
    threads, per_thread, keys = 8, 100, 10
    run = new_id("load")
    clients = [on_worker(server, 1 + thread % 2) for thread in range(threads)]

    def write(thread: int) -> None:
        for n in range(per_thread):
            key = f"{run}-{thread}-{n % keys}"
            put(clients[thread], f"/Load/{key}", {"n": thread * 1000 + n})

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, range(threads)))
        last = {
            f"{run}-{t}-{k}": t * 1000 + per_thread - keys + k
            for t in range(threads)
            for k in range(keys)
        }
        etags: dict[int, dict[str, str]] = {}
        for worker, reader in ((1, clients[0]), (2, clients[1])):
            records = {r["id"]: r for r in reader.get(f"/Load/?id=sw={run}-").json()}
            assert records == {key: {"id": key, "n": n} for key, n in last.items()}, worker
            etags[worker] = {key: reader.get(f"/Load/{key}").headers["etag"] for key in last}
        assert etags[1] == etags[2]

        with sse(clients[0], "/Load/?startTime=0") as stream:
            replay = stream.history()
    finally:
        for client in clients:
            client.close()
    mine = [event for event in replay if event.data["id"].startswith(f"{run}-")]
    assert {event.type for event in mine} == {"put"}
    versions = [event.data["version"] for event in mine]
    assert all(b > a for a, b in itertools.pairwise(versions)), "replay not in version order"
    assert [event.id for event in mine] == [str(version) for version in versions]
    written = sorted(event.data["value"]["n"] for event in mine)
    expected = sorted(t * 1000 + n for t in range(threads) for n in range(per_thread))
    assert written == expected, f"{len(written)} writes replayed of {len(expected)}"
    for thread in range(threads):
        ns = [n for n in (e.data["value"]["n"] for e in mine) if n // 1000 == thread]
        assert ns == sorted(ns), f"client {thread}'s writes replayed out of order"
    final = {event.data["id"]: event for event in mine}  # the last event of each record
    assert {key: event.data["value"]["n"] for key, event in final.items()} == last
    assert {key: f'"{event.data["version"]}"' for key, event in final.items()} == etags[1]


# --------------------------------------------------------------------------- real-time


def test_sse_on_one_worker_hears_writes_through_the_other(server: KilnServer) -> None:
    """An SSE subscriber on either worker gets the PUTs, PATCHes and DELETEs made on the other."""
    for writer_worker, stream_worker in ((1, 2), (2, 1)):
        dog = new_id()
        with (
            on_worker(server, writer_worker) as writer,
            on_worker(server, stream_worker) as reader,
            sse(reader, f"/Dog/{dog}") as stream,
        ):
            assert stream.history() == []
            put(writer, f"/Dog/{dog}", {"name": "Rex", "age": 1})
            assert writer.patch(f"/Dog/{dog}", json={"age": 2}).status_code == 204
            assert writer.delete(f"/Dog/{dog}").status_code == 204
            events = stream.take(3)
        assert [event.type for event in events] == ["put", "patch", "delete"]
        assert events[0].data["value"] == {"id": dog, "name": "Rex", "age": 1}
        assert events[1].data["value"] == {"id": dog, "name": "Rex", "age": 2}
        assert (events[2].data["id"], events[2].data["value"]) == (dog, None)


def test_a_collection_stream_on_one_worker_hears_the_others_writes(server: KilnServer) -> None:
    """``GET /Dog/`` as an event stream on worker 2 hears writes through worker 1, and back."""
    with (
        on_worker(server, 1) as w1,
        on_worker(server, 2) as w2,
        on_worker(server, 1) as r1,
        on_worker(server, 2) as r2,
        sse(r1, "/Dog/?omitCurrent") as on_1,
        sse(r2, "/Dog/?omitCurrent") as on_2,
    ):
        on_1.history()
        on_2.history()
        first, second = new_id(), new_id()
        put(w1, f"/Dog/{first}", {"name": "via 1"})
        put(w2, f"/Dog/{second}", {"name": "via 2"})
        for stream in (on_1, on_2):
            heard = [(event.data["id"], event.data["value"]["name"]) for event in stream.take(2)]
            assert heard == [(first, "via 1"), (second, "via 2")]


def test_websocket_on_worker_2_hears_a_write_through_worker_1(
    server: KilnServer, w1: httpx.Client
) -> None:
    """A WebSocket served by worker 2 gets the current record and a PUT made through worker 1."""
    dog = new_id()
    put(w1, f"/Dog/{dog}", {"name": "before"})
    with ws_on_worker(server, 2, f"/Dog/{dog}") as websocket:
        current = ws_event(websocket, WAIT)
        assert (current["type"], current["value"]) == ("put", {"id": dog, "name": "before"})
        put(w1, f"/Dog/{dog}", {"name": "after", "age": 7})
        frame = ws_event(websocket, WAIT)
    assert (frame["type"], frame["value"]) == ("put", {"id": dog, "name": "after", "age": 7})
    assert frame["version"] > current["version"]


def test_a_websocket_message_on_one_worker_reaches_sse_on_the_other(server: KilnServer) -> None:
    """A message sent into a WebSocket on worker 1 reaches an SSE subscriber on worker 2."""
    dog = new_id()
    with (
        on_worker(server, 2) as reader,
        sse(reader, f"/Dog/{dog}?omitCurrent") as stream,
        ws_on_worker(server, 1, f"/Dog/{dog}?omitCurrent") as websocket,
    ):
        stream.history()
        websocket.send(json.dumps({"hello": "from worker 1"}))
        event = stream.next()
    assert (event.type, event.data["value"]) == ("message", {"hello": "from worker 1"})


# --------------------------------------------------------------------------- MQTT


def test_an_mqtt_subscriber_hears_a_put_through_worker_2(
    server: KilnServer, w2: httpx.Client
) -> None:
    """The broker (in worker 1) delivers PUTs, PATCHes and DELETEs made over HTTP on worker 2."""
    dog = new_id()
    with Paho(server.mqtt_port).connect() as client:
        assert client.subscribe(f"Dog/{dog}", qos=1) == [1]
        put(w2, f"/Dog/{dog}", {"name": "Http", "age": 1})
        assert w2.patch(f"/Dog/{dog}", json={"age": 2}).status_code == 204
        assert w2.delete(f"/Dog/{dog}").status_code == 204
        created, patched, deleted = client.take(3)
    assert created.topic == f"Dog/{dog}"
    assert json.loads(created.payload) == {"id": dog, "name": "Http", "age": 1}
    assert json.loads(patched.payload) == {"id": dog, "name": "Http", "age": 2}
    assert deleted.payload == b""


def test_mqtt_publishes_reach_sse_and_reads_on_worker_2(
    server: KilnServer, w2: httpx.Client
) -> None:
    """A retained MQTT publish is read at once and heard on worker 2; a plain one is a message."""
    dog = new_id()
    with (
        Paho(server.mqtt_port).connect() as client,
        on_worker(server, 2) as reader,
        sse(reader, f"/Dog/{dog}?omitCurrent") as stream,
    ):
        stream.history()
        assert client.publish(f"Dog/{dog}", json.dumps({"name": "Mq"}), qos=1, retain=True) == 0
        assert w2.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Mq"}  # durable at PUBACK
        client.publish(f"Dog/{dog}", b'{"ping": true}', qos=1)
        stored, message = stream.take(2)
    assert (stored.type, stored.data["value"]) == ("put", {"id": dog, "name": "Mq"})
    assert (message.type, message.data["value"]) == ("message", {"ping": True})
    assert w2.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Mq"}  # a message stores nothing


# --------------------------------------------------------------------------- security


def test_both_workers_ask_for_credentials(server: KilnServer) -> None:
    """Without credentials every worker answers 401 on a table, with the Basic challenge."""
    for worker in (1, 2):
        with on_worker(server, worker, auth=None) as anonymous:
            for path in ("/Dog/", f"/Dog/{new_id()}", "/Dog"):
                response = anonymous.get(path)
                assert response.status_code == 401, (worker, path, response.text)
                assert response.headers["www-authenticate"].startswith("Basic ")
            assert anonymous.put(f"/Dog/{new_id()}", json={"name": "x"}).status_code == 401
        with on_worker(server, worker, auth=(ADMIN_AUTH[0], "wrong-password")) as wrong:
            assert wrong.get("/Dog/").status_code == 401


def test_a_token_from_one_worker_works_on_the_other(server: KilnServer) -> None:
    """Tokens issued (and refreshed) by either worker are accepted by the other."""
    dog = new_id()
    for issuer, user in ((1, 2), (2, 1)):
        with on_worker(server, issuer, auth=None) as issuing:
            login = {"username": ADMIN_AUTH[0], "password": ADMIN_AUTH[1]}
            response = issuing.post("/_auth/token", json=login)
            assert response.status_code == 200, response.text
            tokens = response.json()
        with on_worker(server, user, auth=None) as using:
            bearer = {"authorization": f"Bearer {tokens['access_token']}"}
            assert using.put(f"/Dog/{dog}", json={"name": "t"}, headers=bearer).status_code == 204
            assert using.get(f"/Dog/{dog}", headers=bearer).status_code == 200
            refreshed = using.post(
                "/_auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            )
            assert refreshed.status_code == 200, refreshed.text
        with on_worker(server, issuer, auth=None) as back:
            bearer = {"authorization": f"Bearer {refreshed.json()['access_token']}"}
            assert back.get(f"/Dog/{dog}", headers=bearer).status_code == 200


def kiln_user(server: KilnServer, *args: str, password: str | None = None) -> None:
    """``kiln user ...`` on the running server's folders, in a process of its own."""
    command = [sys.executable, "-m", "kiln", "user", *args]
    command += ["--app", str(server.app_dir), "--data", str(server.data_dir)]
    if password is not None:
        command.append("--password-stdin")
    done = subprocess.run(
        command,
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_user_added_while_running_is_known_to_both_workers(server: KilnServer) -> None:
    """Users can't be created over HTTP: one added with ``kiln user add`` while the server runs
    logs in on both workers at once, and once removed is refused by both."""
    name = f"u{uuid.uuid4().hex[:8]}"
    auth = (name, "a-long-password")
    clients = [on_worker(server, worker, auth=auth) for worker in (1, 2)]
    try:
        for client in clients:
            assert client.get("/Dog/").status_code == 401
        kiln_user(server, "add", name, "--role", "super_user", password=auth[1])
        for worker, client in zip((1, 2), clients, strict=True):
            assert eventually(lambda c=client: c.get("/Dog/").status_code == 200, 2), (
                f"worker {worker} does not know the new user"
            )
        kiln_user(server, "remove", name)
        for worker, client in zip((1, 2), clients, strict=True):
            assert eventually(lambda c=client: c.get("/Dog/").status_code == 401, 2), (
                f"worker {worker} still lets the removed user in"
            )
    finally:
        for client in clients:
            client.close()


# --------------------------------------------------------------------------- lifecycle


def test_sigterm_ends_every_worker(app_dirs: tuple[Path, Path], started: list[KilnServer]) -> None:
    """SIGTERM to the main process: it exits 0 without an error, worker 2 and the write process
    are gone and the port is free."""
    kiln = start_server(*app_dirs, started)
    main = main_pid(kiln)
    children = descendants(main)
    writer, worker_2 = the_child(main, "write"), the_child(main, "serve")
    assert children == {writer, worker_2}
    assert listening({main} | children, kiln.port) == {main, worker_2}
    with on_worker(kiln, 1) as w1, on_worker(kiln, 2) as w2:
        put(w1, f"/Dog/{new_id()}", {"name": "through the write process"})
        put(w2, f"/Dog/{new_id()}", {"name": "through the write process"})
    with on_worker(kiln, 2) as w2, sse(w2, f"/Dog/{new_id()}?omitCurrent") as stream:
        stream.history()
        started_at = time.monotonic()
        assert kiln.stop(signal.SIGTERM, timeout=20) == 0, kiln.log()
        assert time.monotonic() - started_at < WAIT
        with pytest.raises((EOFError, httpx.RemoteProtocolError, httpx.ReadError)):
            stream.next()  # the stream ends (not a timeout: worker 2 stopped too)
    assert eventually(lambda: not alive(writer), 2), f"the write process {writer} still runs"
    assert eventually(lambda: not any(alive(pid) for pid in children), 2), (
        f"still running after the main process exited: {[p for p in children if alive(p)]}"
    )
    assert refuses(kiln.port), "something still listens on the HTTP port"
    assert refuses(kiln.mqtt_port)
    errors = [line for line in kiln.log().splitlines() if "ERROR" in line]
    assert errors == [], "a clean stop logged errors:\n" + "\n".join(errors)


def test_sigterm_to_the_whole_process_group_stops_cleanly(
    app_dirs: tuple[Path, Path], started: list[KilnServer]
) -> None:
    """A service manager stops a server by signalling its whole process group (systemd's
    default): every write in flight is still answered, none with a 500, the main process
    exits 0 without an error, and every acknowledged write is there after a restart."""
    kiln = KilnServer(*app_dirs, free_port(), env=dict(WORKERS_ENV), own_group=True)
    started.append(kiln)
    kiln.start()
    wait_for_workers(kiln)
    main = main_pid(kiln)
    children = descendants(main)
    acked: list[str] = []
    statuses: list[int] = []
    # Plain clients, not pinned ones: during the stop a client may reconnect to the worker
    # still answering, and that answer must be counted too. Six connections reach both.
    clients = [httpx.Client(base_url=kiln.url, auth=ADMIN_AUTH, timeout=10) for _ in range(6)]
    ready = threading.Barrier(len(clients) + 1)

    def write(client: httpx.Client, n: int) -> None:
        ready.wait()
        with client:
            for i in itertools.count():
                dog = f"group-{n}-{i}"
                try:
                    response = client.put(f"/Dog/{dog}", json={"name": dog})
                except httpx.TransportError:
                    return  # the server has stopped
                statuses.append(response.status_code)
                if response.status_code != 204:
                    return
                acked.append(dog)

    threads = [threading.Thread(target=write, args=(c, n)) for n, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    assert eventually(lambda: len(acked) >= 60)
    os.killpg(main, signal.SIGTERM)
    assert kiln.process is not None and kiln.process.wait(20) == 0, kiln.log()
    for thread in threads:
        thread.join(20)
    assert 500 not in statuses, f"writes in flight failed: {statuses.count(500)} x 500"
    assert eventually(lambda: not any(alive(pid) for pid in children), 5)
    errors = [line for line in kiln.log().splitlines() if "ERROR" in line]
    assert errors == [], "a group stop logged errors:\n" + "\n".join(errors)
    kiln.start()
    wait_for_workers(kiln)
    with on_worker(kiln, 2) as w2:
        missing = [dog for dog in acked if w2.get(f"/Dog/{dog}").status_code != 200]
    assert missing == [], f"{len(missing)} acknowledged writes lost"
    shut_down(kiln, descendants(main_pid(kiln)))


def _acknowledged_writes(kiln: KilnServer, acked: dict[str, dict[str, Any]]) -> None:
    """Write records through both workers, alternately, keeping each acknowledged one."""
    with on_worker(kiln, 1) as w1, on_worker(kiln, 2) as w2:
        for n in range(100):
            client = (w1, w2)[n % 2]
            dog = f"before-{n}"
            put(client, f"/Dog/{dog}", {"name": dog, "age": n % 2 + 1})
            acked[dog] = {"id": dog, "name": dog, "age": n % 2 + 1}


def test_kill_9_of_the_main_process_ends_the_workers_and_keeps_acknowledged_writes(
    app_dirs: tuple[Path, Path], started: list[KilnServer]
) -> None:
    """``kill -9`` of the main process: the other workers exit by themselves, and every write
    acknowledged by any worker, before or during the kill, is there after a restart."""
    kiln = start_server(*app_dirs, started)
    children = descendants(main_pid(kiln))
    assert children, "the main process started no worker"
    acked: dict[str, dict[str, Any]] = {}
    _acknowledged_writes(kiln, acked)

    lock = threading.Lock()
    stop = threading.Event()
    counts = {"acked": 0}

    def keep_writing(thread: int) -> None:
        with httpx.Client(base_url=kiln.url, auth=ADMIN_AUTH, timeout=5) as client:
            for n in itertools.count():
                if stop.is_set():
                    return
                dog = f"during-{thread}-{n}"
                try:
                    response = client.put(f"/Dog/{dog}", json={"name": dog})
                except httpx.TransportError:
                    return
                if response.status_code == 204:
                    with lock:
                        acked[dog] = {"id": dog, "name": dog}
                        counts["acked"] += 1

    threads = [threading.Thread(target=keep_writing, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    try:
        assert eventually(lambda: counts["acked"] >= 100), "the writers made no progress"
        kiln.kill()
        gone = eventually(lambda: not any(alive(pid) for pid in children), WAIT)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert gone, f"workers still running {WAIT}s after the kill: {children}"
    assert refuses(kiln.port), "something still listens on the HTTP port"

    restarted = start_server(*app_dirs, started)
    for worker in (1, 2):
        with on_worker(restarted, worker) as client:
            found = {record["id"]: record for record in client.get("/Dog/").json()}
            missing = [dog for dog, record in acked.items() if found.get(dog) != record]
            assert missing == [], f"worker {worker}: {len(missing)} acknowledged writes lost"


def test_a_worker_that_dies_stops_the_server(
    app_dirs: tuple[Path, Path], started: list[KilnServer]
) -> None:
    """``kill -9`` of worker 2: the main process logs it, exits non-zero, and frees the port."""
    kiln = start_server(*app_dirs, started)
    main = main_pid(kiln)
    children = descendants(main)
    worker_2 = the_child(main, "serve")
    serving = listening(children, kiln.port)
    assert serving == {worker_2}, f"child processes listening on the HTTP port: {serving}"
    os.kill(worker_2, signal.SIGKILL)
    assert kiln.process is not None
    try:
        code = kiln.process.wait(WAIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the main process still runs {WAIT}s after worker 2 died:\n{kiln.log()}")
    log = kiln.log()
    assert code != 0, log
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert any(
        re.search(r"(?i)\bworker\s*2\b", line) or str(worker_2) in line for line in errors
    ), f"no error naming worker 2 (pid {worker_2}):\n{log}"
    assert eventually(lambda: not any(alive(pid) for pid in children), 2)
    assert refuses(kiln.port), "something still listens on the HTTP port"


def test_kill_9_of_the_write_process_stops_the_server_and_keeps_acknowledged_writes(
    app_dirs: tuple[Path, Path], started: list[KilnServer]
) -> None:
    """``kill -9`` of the write process while both workers write: the main process logs an
    error naming it and exits non-zero within seconds, worker 2 ends too, the port is free, and
    every write acknowledged before or during the kill is there after a restart."""
    kiln = start_server(*app_dirs, started)
    main = main_pid(kiln)
    children = descendants(main)
    writer, worker_2 = the_child(main, "write"), the_child(main, "serve")
    acked: dict[str, dict[str, Any]] = {}
    _acknowledged_writes(kiln, acked)

    lock = threading.Lock()
    stop = threading.Event()
    clients = [on_worker(kiln, 1 + thread % 2) for thread in range(4)]
    counts = [0] * len(clients)
    refused: list[int] = []

    def keep_writing(thread: int) -> None:
        with clients[thread] as client:
            for n in itertools.count():
                if stop.is_set():
                    return
                dog = f"during-{thread}-{n}"
                try:
                    response = client.put(f"/Dog/{dog}", json={"name": dog})
                except (httpx.TransportError, PinLost):
                    return
                with lock:
                    if response.status_code == 204:
                        acked[dog] = {"id": dog, "name": dog}
                        counts[thread] += 1
                    else:
                        refused.append(response.status_code)

    threads = [threading.Thread(target=keep_writing, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    try:
        assert eventually(lambda: min(counts) >= 10), f"the writers made no progress: {counts}"
        os.kill(writer, signal.SIGKILL)
        killed_at = time.monotonic()
        assert kiln.process is not None
        try:
            code = kiln.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the main process still runs {WAIT}s after the write process died")
        took = time.monotonic() - killed_at
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    log = kiln.log()
    assert code != 0, log
    assert took < 5, f"the main process took {took:.1f}s to stop"
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert any(
        re.search(r"(?i)\bwrite process\b", line) or str(writer) in line for line in errors
    ), f"no error naming the write process (pid {writer}):\n{log}"
    assert eventually(lambda: not alive(worker_2), 2), f"worker 2 ({worker_2}) still runs"
    assert eventually(lambda: not any(alive(pid) for pid in children), 2)
    assert refuses(kiln.port), "something still listens on the HTTP port"
    assert set(refused) <= {500}, f"writes refused with {sorted(set(refused))}"

    restarted = start_server(*app_dirs, started)
    for worker in (1, 2):
        with on_worker(restarted, worker) as client:
            found = {record["id"]: record for record in client.get("/Dog/").json()}
            missing = [dog for dog, record in acked.items() if found.get(dog) != record]
            assert missing == [], f"worker {worker}: {len(missing)} acknowledged writes lost"


@pytest.mark.parametrize("value", ["0", "abc"])
def test_a_bad_worker_count_stops_start_up(app_dirs: tuple[Path, Path], value: str) -> None:
    """``KILN_HTTP_WORKERS`` must be a whole number of at least 1: start-up names the setting."""
    app_dir, data_dir = app_dirs
    port = free_port()
    command = [sys.executable, "-m", "kiln", "run", str(app_dir), "--port", str(port)]
    done = subprocess.run(
        [*command, "--data", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KILN_HTTP_WORKERS": value, "KILN_MQTT_PORT": str(free_port())},
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "http.workers" in output, output
    assert refuses(port)


def test_one_worker_by_default(app_dirs: tuple[Path, Path], started: list[KilnServer]) -> None:
    """Without the setting there is one process, and ``/_health`` says so."""
    kiln = KilnServer(*app_dirs, free_port())
    started.append(kiln)
    kiln.start()
    for _ in range(20):
        body = health(kiln)
        assert (body["worker"], body["workers"]) == (1, 1)
    with httpx.Client(base_url=kiln.url, auth=ADMIN_AUTH, timeout=10) as client:
        put(client, f"/Dog/{new_id()}", {"name": "written in the one process"})
    assert children(main_pid(kiln)) == set(), "one worker needs no other process, not even a writer"
