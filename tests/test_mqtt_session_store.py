"""The persistent session store (``kiln.mqtt.sessions``): what it keeps, and expiry."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.mqtt import Publish, Subscription
from kiln.mqtt.sessions import NEVER, SessionState, SessionStore, SubscriptionState, snapshot


def state(client_id: str, **fields: object) -> SessionState:
    return SessionState(client_id=client_id, **fields)  # type: ignore[arg-type]


def test_a_session_round_trips(tmp_path: Path) -> None:
    session = state("c1", expiry_interval=NEVER)
    session.subscriptions["Dog/#"] = SubscriptionState(
        options=Subscription(topic_filter="Dog/#", qos=1), identifier=3, cursor=99
    )
    session.inflight[7] = Publish(topic="Dog/1", payload=b"{}", qos=1, packet_id=7)
    store = SessionStore(tmp_path / "mqtt")
    store.save({"c1": snapshot(session)})
    store.close()
    store = SessionStore(tmp_path / "mqtt")
    assert store.load("c1") == session
    assert store.load("c2") is None
    store.delete("c1")
    assert store.load("c1") is None
    store.close()


def test_sweep_removes_the_expired_and_starts_the_crashed_clocks(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "mqtt")
    store.save(
        {
            "old": snapshot(state("old", expiry_interval=10, disconnected_at=100.0)),
            "young": snapshot(state("young", expiry_interval=10, disconnected_at=195.0)),
            "forever": snapshot(state("forever", expiry_interval=NEVER, disconnected_at=1.0)),
            "crashed": snapshot(state("crashed", expiry_interval=10)),  # still connected
        }
    )
    assert store.sweep(now=200.0) == 1
    assert store.load("old") is None
    assert store.load("young") is not None and store.load("forever") is not None
    crashed = store.load("crashed")
    assert crashed is not None and crashed.disconnected_at == 200.0
    store.close()


def test_packet_ids_skip_those_in_use() -> None:
    session = state("c", next_packet_id=0xFFFF)
    session.inflight[1] = Publish(topic="t", qos=1, packet_id=1)
    assert [session.packet_id(), session.packet_id()] == [0xFFFF, 2]
    full = state("full")
    full.inflight.update({n: Publish(topic="t") for n in range(1, 0x10000)})
    with pytest.raises(RuntimeError, match="65535"):
        full.packet_id()
