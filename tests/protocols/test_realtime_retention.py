"""Audit log retention: old entries are pruned, and a replay that reaches past them says so."""

from __future__ import annotations

import time

import httpx
from realtime_clients import sse

from conftest import ADMIN_AUTH, KilnServer

SCHEMA = """
type Dog @table @export {
  id: ID @primaryKey
  name: String
}
"""

CONFIG = """
logging:
  auditRetention: 1s
realtime:
  heartbeat: 300ms
"""


def test_pruned_history_starts_with_a_gap_event(
    kiln_server: KilnServer, http: httpx.Client
) -> None:
    for n in range(3):
        assert http.put("/Dog/old", json={"name": f"v{n}"}).status_code == 204
    time.sleep(2.5)  # older than the retention, and the pruner (every 0.5 s) has run
    assert http.put("/Dog/old", json={"name": "fresh"}).status_code == 204
    with httpx.Client(base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=5) as client:
        with sse(client, "/Dog/old?startTime=1") as stream:
            gap, *rest = stream.history()
        assert gap.type == "gap"
        assert "pruned" in gap.data["value"]["detail"]
        assert gap.data["value"]["prunedThrough"] > 1
        assert [event.data["value"]["name"] for event in rest] == ["fresh"]
        with sse(client, "/Dog/old?previousCount=4") as stream:
            events = stream.history()
        assert [event.type for event in events] == ["gap", "put"]
        # a replay from after the pruned point has no gap
        since = gap.data["value"]["prunedThrough"]
        with sse(client, f"/Dog/old?startTime={since}") as stream:
            assert [event.type for event in stream.history()] == ["put"]
    assert http.get("/Dog/old").json()["name"] == "fresh"  # pruning the log leaves the data
