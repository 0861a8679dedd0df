"""Durability of acknowledged writes across a crash (``kill -9``) and a clean stop (SIGTERM).

Each test starts its own ``kiln run`` subprocess on a fresh app and data folder,
writes over HTTP, stops the process and starts a new one on the same folders.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ADMIN_AUTH, KilnServer, free_port, write_app

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  breed: String @indexed
  age: Int
}

type Note @table @export {
  id: ID @primaryKey
  text: String
}
"""


BREEDS = ("lab", "pug", "collie", "husky")

Acked = dict[tuple[str, Any], dict[str, Any]]
"""(table, key) → the record the server acknowledged."""


@pytest.fixture()
def app_dirs(tmp_path: Path) -> tuple[Path, Path]:
    return write_app(tmp_path / "app", SCHEMA), tmp_path / "data"


@pytest.fixture()
def servers() -> Iterator[list[KilnServer]]:
    """Every server a test starts; whatever is still running at the end is killed."""
    started: list[KilnServer] = []
    yield started
    for server in started:
        server.kill()


def start(app_dir: Path, data_dir: Path, servers: list[KilnServer]) -> KilnServer:
    server = KilnServer(app_dir, data_dir, free_port())
    servers.append(server)
    server.start()
    return server


def client(server: KilnServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=ADMIN_AUTH, timeout=10)


def dog(key: int) -> dict[str, Any]:
    return {"name": f"dog-{key}", "breed": BREEDS[key % len(BREEDS)], "age": key % 17}


def write_one(http: httpx.Client, n: int, acked: Acked, lock: threading.Lock) -> None:
    """One write, chosen by ``n``: PUT, POST with a key, or POST of a note (generated key).

    Records it in ``acked`` only when the server answered 2xx.
    """
    if n % 5 == 0:
        body: dict[str, Any] = {"text": f"note-{n}"}
        response = http.post("/Note/", json=body)
        assert response.status_code == 201, response.text
        key = response.headers["location"].rsplit("/", 1)[1]
        assert response.json() == {"id": key, **body}
        entry = (("Note", key), {"id": key, **body})
    elif n % 2 == 0:
        response = http.post("/Dog/", json={"id": n, **dog(n)})
        assert response.status_code == 201, response.text
        assert response.headers["location"] == f"/Dog/{n}"
        entry = (("Dog", n), {"id": n, **dog(n)})
    else:
        response = http.put(f"/Dog/{n}", json=dog(n))
        assert response.status_code == 204, response.text
        entry = (("Dog", n), {"id": n, **dog(n)})
    with lock:
        acked[entry[0]] = entry[1]


def assert_all_present(server: KilnServer, acked: Acked) -> None:
    missing: list[str] = []
    with client(server) as http:
        for (table, key), record in acked.items():
            response = http.get(f"/{table}/{key}")
            if response.status_code != 200 or response.json() != record:
                missing.append(f"{table}/{key}: {response.status_code} {response.text[:200]}")
        dogs = http.get("/Dog/").json()
    assert missing == [], f"{len(missing)} acknowledged write(s) lost:\n" + "\n".join(missing[:20])
    assert len(dogs) >= sum(1 for table, _ in acked if table == "Dog")


def concurrently(count: int, action: Callable[[httpx.Client, int], None], server: KilnServer):
    """Run ``action(client, n)`` for n in 1..count on 16 threads, one client per thread."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def run(n: int) -> None:
        if not hasattr(local, "http"):
            local.http = client(server)
            clients.append(local.http)
        action(local.http, n)

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(run, range(1, count + 1)))
    finally:
        for http in clients:
            http.close()


def test_acknowledged_writes_survive_kill_9(
    app_dirs: tuple[Path, Path], servers: list[KilnServer]
) -> None:
    app_dir, data_dir = app_dirs
    server = start(app_dir, data_dir, servers)
    acked: Acked = {}
    lock = threading.Lock()

    # First batch: 300 concurrent writes, every one acknowledged.
    concurrently(300, lambda http, n: write_one(http, n, acked, lock), server)
    assert len(acked) == 300

    # Second batch: writers keep going until the process dies under them.
    first_batch = len(acked)
    stop = threading.Event()
    outcomes = {"acked": 0, "failed": 0}

    def keep_writing(thread: int) -> None:
        with client(server) as http:
            n = 100_000 + thread * 10_000
            while not stop.is_set():
                n += 1
                try:
                    write_one(http, n, acked, lock)
                except httpx.TransportError:
                    with lock:
                        outcomes["failed"] += 1
                    return
                with lock:
                    outcomes["acked"] += 1

    threads = [threading.Thread(target=keep_writing, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while outcomes["acked"] < 200 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert outcomes["acked"] >= 200, "the second batch made no progress"
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(15)
    assert server.process is not None and server.process.returncode == -signal.SIGKILL
    assert len(acked) > first_batch
    assert outcomes["failed"] > 0, "no write failed: the server was not killed under load"

    restarted = start(app_dir, data_dir, servers)
    assert_all_present(restarted, acked)

    # The restarted server keeps accepting writes on top of the recovered data.
    with client(restarted) as http:
        assert http.put("/Dog/1", json={"name": "after"}).status_code == 204
        assert http.get("/Dog/1").json() == {"id": 1, "name": "after"}


def test_sigterm_stops_cleanly_and_keeps_the_data(
    app_dirs: tuple[Path, Path], servers: list[KilnServer]
) -> None:
    app_dir, data_dir = app_dirs
    server = start(app_dir, data_dir, servers)
    acked: Acked = {}
    lock = threading.Lock()
    concurrently(100, lambda http, n: write_one(http, n, acked, lock), server)
    with client(server) as http:
        assert http.patch("/Dog/3", json={"age": 99}).status_code == 204
        acked[("Dog", 3)] = {**acked[("Dog", 3)], "age": 99}
        assert http.delete("/Dog/7").status_code == 204
        del acked[("Dog", 7)]
    assert_all_present(server, acked)  # reads, too, before the stop

    assert server.stop(signal.SIGTERM) == 0, server.log()

    restarted = start(app_dir, data_dir, servers)
    assert_all_present(restarted, acked)
    with client(restarted) as http:
        assert http.get("/Dog/7").status_code == 404
    assert restarted.stop(signal.SIGTERM) == 0, restarted.log()


def test_sigterm_under_load_exits_zero_and_keeps_acknowledged_writes(
    app_dirs: tuple[Path, Path], servers: list[KilnServer]
) -> None:
    """SIGTERM while reads and writes are in flight, over several lifecycles: each stop
    exits 0 and every write acknowledged before it is there after the restart."""
    app_dir, data_dir = app_dirs
    acked: Acked = {}
    lock = threading.Lock()
    codes: list[int] = []
    logs: list[str] = []
    for cycle in range(6):
        server = start(app_dir, data_dir, servers)
        assert_all_present(server, acked)
        stop = threading.Event()
        written = [0]

        def hammer(
            thread: int,
            server: KilnServer = server,
            stop: threading.Event = stop,
            written: list[int] = written,
            base: int = cycle * 1_000_000,
        ) -> None:
            n = base + thread * 10_000
            with client(server) as http:
                while not stop.is_set():
                    n += 1
                    try:
                        write_one(http, n, acked, lock)
                        http.get(f"/Dog/{n}")
                    except httpx.TransportError:
                        return
                    with lock:
                        written[0] += 1

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while written[0] < 40 and time.monotonic() < deadline:
            time.sleep(0.005)
        codes.append(server.stop(signal.SIGTERM))
        stop.set()
        for thread in threads:
            thread.join(15)
        if codes[-1] != 0:
            logs.append(server.log())
    assert_all_present(start(app_dir, data_dir, servers), acked)
    assert codes == [0] * 6, f"exit codes {codes}; log of a failed stop:\n{logs[0]}"
