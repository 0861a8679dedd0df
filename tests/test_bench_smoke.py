"""The benchmarks still run end to end (tiny and short: this checks they work, not speed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

needs_wrk = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not on PATH (apt-get install wrk) to load servers"
)


def run_bench(module: str, *options: str, timeout: float = 120) -> tuple[str, str]:
    """Run ``python -m bench.<module> options...`` from the checkout; (stdout, all output).

    Fails the test, with the output, unless the bench exits 0.
    """
    finished = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    return finished.stdout, output


def has_line(pattern: str, text: str) -> bool:
    """Whether a whole line of ``text`` matches the regular expression ``pattern``."""
    return re.search(pattern, text, re.MULTILINE) is not None


@needs_wrk
def test_bench_rest_runs_and_prints_the_ratios() -> None:
    out, output = run_bench(
        "rest",
        *("--records", "200", "--duration", "1", "--connections", "4", "--threads", "1"),
        *("--http-seed", "100"),  # ids 101-200 offline, 1-100 over HTTP: both seeding paths
        *("--workers", "2"),  # kiln with two workers; the bare app with one and with two
    )
    assert "seeded ids 101-200 offline" in out, output
    assert "seeded ids 1-100 over HTTP" in out, output
    rows = (
        "kiln GET",
        "bare GET",
        "bare GET x2",
        "kiln GET cbor",
        "kiln GET msgpack",
        "kiln PUT",
        "kiln PUT update",
        "bare durable PUT",
    )
    for target in rows:
        assert has_line(rf"^{target}\s+[\d,]+\s", out), output
    for name in ("kiln GET", "kiln PUT", "kiln PUT update"):
        assert has_line(
            rf"^ratio {name} / bare GET( x2)? = \d+\.\d+ +\(target >= 0\.\d+: (met|NOT met)\)$",
            out,
        ), output
    assert has_line(r"^ratio bare durable PUT / bare GET( x2)? = \d+\.\d+ +\(the floor", out), (
        output
    )
    assert has_line(r"^ratio kiln PUT update / bare durable PUT = \d+\.\d+$", out), output
    for name in ("cbor", "msgpack"):
        assert has_line(rf"^ratio kiln GET {name} / kiln GET \(JSON\) = \d+\.\d+$", out), output
    assert "WARNING" not in out, output  # no error responses, no socket errors


def test_bench_startup_runs_and_prints_the_ratio() -> None:
    out, output = run_bench("startup", "--records", "200", "--runs", "1")
    assert has_line(r"^kiln run GET /Dog/1\s+[\d.]+ ms$", out), output
    assert has_line(r"^ratio kiln GET /Dog/1 / python -c pass = \d+\.\d+$", out), output


@needs_wrk
def test_bench_query_runs_and_prints_the_ratios() -> None:
    out, output = run_bench(
        "query", "--records", "2000", "--duration", "1", "--workers", "2", timeout=180
    )
    assert "seeded 2,000 records offline" in out, output
    for target in (
        "bare GET",
        "bare GET x2",
        "indexed eq (10 rows)",
        "range limit(100)",
        "join eq (10 rows)",
        "full scan eq (10 rows)",
    ):
        assert has_line(rf"^{re.escape(target)}\s+[\d,.]+\s", out), output
    assert has_line(
        r"^ratio indexed eq \(10 rows\) / bare GET( x2)? = \d+\.\d+ "
        r"+\(target >= 0\.40: (met|NOT met)\)$",
        out,
    ), output
    assert has_line(r"^ratio join eq \(10 rows\) / indexed eq \(10 rows\) = \d+\.\d+$", out), output
    assert "WARNING" not in out, output


@needs_wrk
def test_bench_resources_runs_and_prints_the_overhead() -> None:
    out, output = run_bench(
        "resources",
        *("--records", "200", "--duration", "1", "--connections", "4", "--threads", "1"),
        *("--rounds", "1"),
    )
    for target in ("GET /Dog/<id>", "GET /DogPlus/<id>"):
        assert has_line(rf"^{re.escape(target)}\s+[\d,]+\s", out), output
    assert has_line(
        r"^overhead of the subclass = 1 - DogPlus/Dog = -?\d+\.\d%"
        r" +\(target <= 20%: (met|NOT met)\)$",
        out,
    ), output
    assert "WARNING" not in out, output


@needs_wrk
def test_bench_auth_runs_and_prints_the_overheads() -> None:
    out, output = run_bench(
        "auth",
        *("--records", "200", "--duration", "1", "--connections", "4", "--threads", "1"),
        *("--rounds", "1"),
    )
    for target in ("anonymous", "basic", "bearer"):
        assert has_line(rf"^{target}\s+[\d,]+\s", out), output
    for name in ("basic", "bearer"):
        assert has_line(
            rf"^overhead of {name} = 1 - {name}/anonymous = -?\d+\.\d%"
            r" +\(target <= 15%: (met|NOT met)\)$",
            out,
        ), output
    assert "WARNING" not in out, output


@needs_wrk
def test_bench_realtime_runs_and_prints_the_latencies() -> None:
    _out, output = run_bench(
        "realtime",
        *("--subscribers", "5", "--rate", "50", "--duration", "1", "--fanout", "20"),
        timeout=180,
    )
    for row in ("fsync (4 KiB, baseline)", "PUT → SSE delivery", "PUT → WebSocket delivery"):
        assert re.search(rf"{re.escape(row)}\s+\d+\.\d+\s+\d+\.\d+\s+\d+", output), output
    assert re.search(r"one record each; [1-9][\d,]* PUTs at \d+/s", output), output
    assert "fan-out: one PUT to 20 SSE subscribers" in output, output
    assert "20/20 delivered" in output, output
    assert "WARNING" not in output, output


@pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed (apt-get install mosquitto): the MQTT baseline",
)
def test_bench_mqtt_runs_and_prints_the_ratios() -> None:
    out, output = run_bench(
        "mqtt",
        *("--messages", "2000", "--subscribers", "5", "--fanout-messages", "200"),
        *("--qos1-messages", "500", "--processes", "2"),
    )
    for scenario in ("QoS 0, 1 -> 1", "QoS 0, 1 -> 5", "QoS 1, 1 -> 1"):
        for broker in ("kiln", "mosquitto"):
            assert has_line(rf"^{re.escape(scenario)} +{broker} +[\d,]+ +[\d,]+ +-?[\d,]+$", out), (
                output
            )
        assert has_line(rf"^ratio {re.escape(scenario)}: kiln / mosquitto = \d+\.\d\d", out), output
    assert re.search(r"target >= 0\.30: (met|NOT met)", out), output
