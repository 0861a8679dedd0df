"""The benchmarks still run end to end (tiny and short: this checks they work, not speed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not on PATH (apt-get install wrk) to load servers"
)
def test_bench_rest_runs_and_prints_the_ratios() -> None:
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.rest",
            *("--records", "200", "--duration", "1", "--connections", "4", "--threads", "1"),
            *("--http-seed", "100"),  # ids 101-200 offline, 1-100 over HTTP: both seeding paths
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    assert "seeded ids 101-200 offline" in finished.stdout, output
    assert "seeded ids 1-100 over HTTP" in finished.stdout, output
    rows = (
        "kiln GET",
        "bare GET",
        "kiln GET cbor",
        "kiln GET msgpack",
        "kiln PUT",
        "kiln PUT update",
    )
    for target in rows:
        assert re.search(rf"^{target}\s+[\d,]+\s", finished.stdout, re.MULTILINE), output
    for name in ("kiln GET", "kiln PUT", "kiln PUT update"):
        assert re.search(
            rf"^ratio {name} / bare GET = \d+\.\d+ +\(target >= 0\.\d+: (met|NOT met)\)$",
            finished.stdout,
            re.MULTILINE,
        ), output
    for name in ("cbor", "msgpack"):
        assert re.search(
            rf"^ratio kiln GET {name} / kiln GET \(JSON\) = \d+\.\d+$",
            finished.stdout,
            re.MULTILINE,
        ), output
    assert "WARNING" not in finished.stdout, output  # no error responses, no socket errors


def test_bench_startup_runs_and_prints_the_ratio() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.startup", "--records", "200", "--runs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    assert re.search(r"^kiln run GET /Dog/1\s+[\d.]+ ms$", finished.stdout, re.MULTILINE), output
    assert re.search(
        r"^ratio kiln GET /Dog/1 / python -c pass = \d+\.\d+$", finished.stdout, re.MULTILINE
    ), output


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not on PATH (apt-get install wrk) to load servers"
)
def test_bench_query_runs_and_prints_the_ratios() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.query", "--records", "2000", "--duration", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    assert "seeded 2,000 records offline" in finished.stdout, output
    for target in (
        "bare GET",
        "indexed eq (10 rows)",
        "range limit(100)",
        "join eq (10 rows)",
        "full scan eq (10 rows)",
    ):
        assert re.search(rf"^{re.escape(target)}\s+[\d,.]+\s", finished.stdout, re.MULTILINE), (
            output
        )
    assert re.search(
        r"^ratio indexed eq \(10 rows\) / bare GET = \d+\.\d+ +\(target >= 0\.40: (met|NOT met)\)$",
        finished.stdout,
        re.MULTILINE,
    ), output
    assert re.search(
        r"^ratio join eq \(10 rows\) / indexed eq \(10 rows\) = \d+\.\d+$",
        finished.stdout,
        re.MULTILINE,
    ), output
    assert "WARNING" not in finished.stdout, output


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not on PATH (apt-get install wrk) to load servers"
)
def test_bench_resources_runs_and_prints_the_overhead() -> None:
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.resources",
            *("--records", "200", "--duration", "1", "--connections", "4", "--threads", "1"),
            *("--rounds", "1"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    for target in ("GET /Dog/<id>", "GET /DogPlus/<id>"):
        assert re.search(rf"^{re.escape(target)}\s+[\d,]+\s", finished.stdout, re.MULTILINE), output
    assert re.search(
        r"^overhead of the subclass = 1 - DogPlus/Dog = -?\d+\.\d%"
        r" +\(target <= 20%: (met|NOT met)\)$",
        finished.stdout,
        re.MULTILINE,
    ), output
    assert "WARNING" not in finished.stdout, output


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not on PATH (apt-get install wrk) to load servers"
)
def test_bench_auth_runs_and_prints_the_overheads() -> None:
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.auth",
            *("--records", "200", "--duration", "1", "--connections", "4", "--threads", "1"),
            *("--rounds", "1"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    for target in ("anonymous", "basic", "bearer"):
        assert re.search(rf"^{target}\s+[\d,]+\s", finished.stdout, re.MULTILINE), output
    for name in ("basic", "bearer"):
        assert re.search(
            rf"^overhead of {name} = 1 - {name}/anonymous = -?\d+\.\d%"
            r" +\(target <= 15%: (met|NOT met)\)$",
            finished.stdout,
            re.MULTILINE,
        ), output
    assert "WARNING" not in finished.stdout, output


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not on PATH (apt-get install wrk) to write"
)
def test_bench_realtime_runs_and_prints_the_latencies() -> None:
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.realtime",
            *("--subscribers", "5", "--rate", "50", "--duration", "1", "--fanout", "20"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
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
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.mqtt",
            *("--messages", "2000", "--subscribers", "5", "--fanout-messages", "200"),
            *("--qos1-messages", "500", "--processes", "2"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    for scenario in ("QoS 0, 1 -> 1", "QoS 0, 1 -> 5", "QoS 1, 1 -> 1"):
        for broker in ("kiln", "mosquitto"):
            assert re.search(
                rf"^{re.escape(scenario)} +{broker} +[\d,]+ +[\d,]+ +-?[\d,]+$",
                finished.stdout,
                re.MULTILINE,
            ), output
        assert re.search(
            rf"^ratio {re.escape(scenario)}: kiln / mosquitto = \d+\.\d\d",
            finished.stdout,
            re.MULTILINE,
        ), output
    assert re.search(r"target >= 0\.30: (met|NOT met)", finished.stdout), output
