"""A persistent MQTT session away longer than ``logging.auditRetention``: its replay would
have a gap, so each such subscription starts over as a new one (the current records as
retained messages, then every change) instead of silently missing what was pruned."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from mqtt_clients import Paho, client_id

from conftest import KilnServer

SCHEMA = """
type Dog @table @export {
  id: ID @primaryKey
  name: String
}
"""

CONFIG = """
logging:
  auditRetention: 1s
"""


@pytest.mark.parametrize("version", [4, 5])
def test_a_session_back_after_the_retention_gets_the_current_records(
    kiln_server: KilnServer, http: httpx.Client, version: int
) -> None:
    name, dogs = client_id(), client_id("dogs")
    assert http.put(f"/Dog/{dogs}/1", json={"name": "before"}).status_code == 204
    with Paho(kiln_server.mqtt_port, version=version, name=name, clean=False).connect(
        expiry=300
    ) as client:
        assert client.subscribe(f"Dog/{dogs}/#", qos=1) == [1]
        assert json.loads(client.next().payload)["name"] == "before"
    assert http.put(f"/Dog/{dogs}/1", json={"name": "changed while away"}).status_code == 204
    assert http.put(f"/Dog/{dogs}/2", json={"name": "new while away"}).status_code == 204
    time.sleep(2.5)  # older than the retention, and the pruner (every 0.5 s) has run
    assert http.put(f"/Dog/{dogs}/3", json={"name": "after the prune"}).status_code == 204
    with Paho(kiln_server.mqtt_port, version=version, name=name, clean=False).connect(
        expiry=300
    ) as client:
        assert client.connack is not None and client.connack[1] is True  # session present
        current = {
            message.topic: (message.retain, json.loads(message.payload)["name"])
            for message in client.take(3)
        }
        assert current == {
            f"Dog/{dogs}/1": (True, "changed while away"),
            f"Dog/{dogs}/2": (True, "new while away"),
            f"Dog/{dogs}/3": (True, "after the prune"),
        }
        assert client.quiet()  # each once
        assert http.put(f"/Dog/{dogs}/4", json={"name": "live"}).status_code == 204
        live = client.next()
        assert (live.topic, live.retain, json.loads(live.payload)["name"]) == (
            f"Dog/{dogs}/4",
            False,
            "live",
        )
    assert "missed events of Dog" in kiln_server.log()
