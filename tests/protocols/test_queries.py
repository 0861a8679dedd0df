"""Collection queries over HTTP: conditions, Content-Range, DELETE by query, refusals, memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_AUTH, KilnServer, free_port, write_app

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  breed: String @indexed
  age: Int @indexed
  note: String
}
"""


def seed(http: httpx.Client, first: int, dogs: list[tuple[str, str, int]]) -> list[int]:
    """PUT ``dogs`` (name, breed, age) at ids from ``first``; their ids."""
    ids = []
    for offset, (name, breed, age) in enumerate(dogs):
        key = first + offset
        response = http.put(f"/Dog/{key}", json={"name": name, "breed": breed, "age": age})
        assert response.status_code == 204, response.text
        ids.append(key)
    return ids


def test_a_condition_on_an_indexed_attribute_answers_the_matches_in_key_order(
    http: httpx.Client,
) -> None:
    seed(http, 100, [("a", "q-collie", 3), ("b", "q-pug", 4), ("c", "q-collie", 5)])
    response = http.get("/Dog/?breed=q-collie")
    assert response.status_code == 200
    assert [dog["id"] for dog in response.json()] == [100, 102]
    ranged = http.get("/Dog/?breed=sw=q-&age=gt=3&sort(-age)&select(id)").json()
    assert ranged == [102, 101]


def test_prefer_count_exact_answers_content_range(http: httpx.Client) -> None:
    seed(http, 200, [(f"d{i}", "cr-beagle", i) for i in range(5)])
    prefer = {"prefer": "count=exact"}
    page = http.get("/Dog/?breed=cr-beagle&limit(0,2)", headers=prefer)
    assert page.status_code == 200
    assert len(page.json()) == 2
    assert page.headers["content-range"] == "items 0-1/5"
    assert page.headers["preference-applied"] == "count=exact"
    tail = http.get("/Dog/?breed=cr-beagle&limit(3,10)", headers=prefer)
    assert tail.headers["content-range"] == "items 3-4/5"
    none = http.get("/Dog/?breed=cr-nothing", headers=prefer)
    assert none.json() == []
    assert none.headers["content-range"] == "items */0"
    plain = http.get("/Dog/?breed=cr-beagle")
    assert "content-range" not in plain.headers


def test_delete_by_query_deletes_exactly_the_matches(http: httpx.Client) -> None:
    ids = seed(http, 300, [(f"x{i}", "del-husky" if i % 2 else "del-keep", i) for i in range(6)])
    response = http.delete("/Dog/?breed=del-husky")
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 3}
    left = [dog["id"] for dog in http.get("/Dog/?breed=sw=del-").json()]
    assert left == [key for i, key in enumerate(ids) if i % 2 == 0]
    for i, key in enumerate(ids):
        assert http.get(f"/Dog/{key}").status_code == (404 if i % 2 else 200)
    assert http.delete("/Dog/?breed=del-husky").json() == {"deleted": 0}


def test_delete_of_the_whole_collection_needs_a_condition(http: httpx.Client) -> None:
    seed(http, 400, [("keep", "whole", 1)])
    response = http.delete("/Dog/")
    assert response.status_code == 400
    body = response.json()
    assert "needs conditions" in body["detail"]
    assert "id=ge=" in body["hint"]
    assert http.get("/Dog/400").status_code == 200


def test_delete_with_explain_is_refused_and_deletes_nothing(http: httpx.Client) -> None:
    ids = seed(http, 450, [("a", "explain-del", 1), ("b", "explain-del", 2)])
    response = http.delete("/Dog/?breed=explain-del&explain()")
    assert response.status_code == 400, response.text
    assert "explain()" in response.json()["detail"]
    for key in ids:
        assert http.get(f"/Dog/{key}").status_code == 200


def test_a_query_no_index_drives_is_400_naming_the_attribute(http: httpx.Client) -> None:
    response = http.get("/Dog/?name=Rex")
    assert response.status_code == 400
    body = response.json()
    assert "`name` is not indexed" in body["detail"]
    assert "add @indexed to `name` in schema.graphql" in body["hint"]
    unknown = http.get("/Dog/?colour=red")
    assert unknown.status_code == 400
    bad_sort = http.get("/Dog/?breed=x&sort(+colour)")
    assert bad_sort.status_code == 400


def test_explain_answers_the_plan(http: httpx.Client) -> None:
    seed(http, 500, [("e1", "ex-lab", 1), ("e2", "ex-lab", 2), ("e3", "ex-pug", 2)])
    report = http.get("/Dog/?breed=ex-lab&age=ge=2&explain()").json()
    assert report["driver"]["attribute"] in ("breed", "age")
    assert report["returned"] == 1
    assert report["scanned"] >= 1
    assert report["sort"] is None
    assert {"estimated", "filters"} <= set(report)


# --------------------------------------------------------------------------- memory

BIG_NOTE = "n" * 4000
BIG_COUNT = 10_000  # about 40 MB of JSON


def _rss_anon_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc status")


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnServer]:
    """A server over BIG_COUNT records of about 4 kB each, written with the library first."""
    from kiln.app import load_app
    from kiln.config import load_config
    from kiln.storage.operations import Put

    root = tmp_path_factory.mktemp("big")
    app_dir = write_app(root / "app", SCHEMA)
    config = load_config(app_dir, env={}, overrides={"storage.path": str(root / "data")})
    app = load_app(app_dir, config)
    try:
        writer = app.writers["data"]
        for first in range(1, BIG_COUNT + 1, 2000):
            writer.execute_sync(
                [
                    Put("Dog", i, {"name": f"big {i}", "breed": "big", "age": i, "note": BIG_NOTE})
                    for i in range(first, min(first + 2000, BIG_COUNT + 1))
                ]
            )
    finally:
        app.close()
    server = KilnServer(app_dir, root / "data", free_port())
    server.start()
    yield server
    server.stop()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("path", ["/Dog/", "/Dog/?breed=big", "/Dog/?age=ge=0&sort(+age)"])
def test_streaming_a_large_result_keeps_the_server_memory_flat(
    big_server: KilnServer, path: str
) -> None:
    """The server's own (anonymous) memory grows far less than the result it streams.

    RssAnon, not VmRSS: reading the records touches pages of LMDB's memory map,
    which count in VmRSS as file-backed pages the kernel may drop at any time.
    """
    assert big_server.process is not None
    pid = big_server.process.pid
    headers = {"accept-encoding": "identity"}
    with httpx.Client(base_url=big_server.url, auth=ADMIN_AUTH, timeout=30) as client:
        client.get("/Dog/?limit(10)", headers=headers)  # warm up the code paths
        baseline = _rss_anon_kb(pid)
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss_anon_kb(pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        received = 0
        try:
            with client.stream("GET", path, headers=headers) as response:
                assert response.status_code == 200
                for chunk in response.iter_bytes():
                    received += len(chunk)
        finally:
            done.set()
            sampler.join()
    assert received > 40_000_000
    assert (peak - baseline) * 1024 < 20_000_000, f"grew {(peak - baseline) / 1024:.1f} MiB"
