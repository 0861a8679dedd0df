"""Tests for ``kiln dev`` (:mod:`kiln.dev`): reloads keep the data, a mistake keeps the last
good version serving, requests during a reload are answered, and SIGTERM ends it cleanly.

Each test runs ``python -m kiln dev`` as a subprocess on a free loopback port and edits the
app's files; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_AUTH, ADMIN_ENV, free_port, write_app
from kiln import dev
from kiln.app import load_app
from kiln.config import load_config
from kiln.errors import KilnError, SchemaError

DOG = """type Dog @table @export {
  id: Int @primaryKey
  name: String
}
"""
CAT = """
type Cat @table @export {
  id: Int @primaryKey
  name: String
}
"""
DOG_AND_CAT = DOG + CAT
BROKEN = DOG + CAT.replace("name: String", "name Strin")


class Dev:
    """A ``python -m kiln dev`` subprocess whose output goes to a file."""

    def __init__(self, app: Path, data: Path, log: Path):
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        env.update(ADMIN_ENV)
        args = ["dev", str(app), "--port", str(self.port), "--data", str(data)]
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kiln", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                httpx.get(f"{self.url}/_health", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"kiln dev did not answer:\n{self.output()}")

    def edit(self, name: str, text: str | bytes, timeout: float = 10.0) -> str:
        """Write the app file ``name`` (text, or its bytes) and return the output of the
        reload that follows."""
        before = self.output().count("reload:")
        (self.app / name).write_bytes(text.encode() if isinstance(text, str) else text)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.output()
            if output.count("reload:") > before:
                time.sleep(0.1)  # let the error lines that follow a reload line arrive
                return self.output().split("reload:", before + 1)[-1]
            time.sleep(0.05)
        raise AssertionError(f"no reload after editing {name}:\n{self.output()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


@pytest.fixture()
def running(tmp_path: Path) -> Iterator[Dev]:
    server = Dev(write_app(tmp_path / "app", DOG), tmp_path / "data", tmp_path / "out.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_reload_keeps_records_and_serves_the_new_schema(running: Dev) -> None:
    with httpx.Client(base_url=running.url, auth=ADMIN_AUTH, timeout=10) as http:
        assert http.put("/Dog/1", json={"name": "rex"}).status_code == 204
        assert http.get("/Cat/").status_code == 404

        report = running.edit("schema.graphql", DOG_AND_CAT)
        assert "serving the new version" in report, report
        assert "new /Cat/" in report, report
        assert http.get("/Dog/1").json() == {"id": 1, "name": "rex"}
        assert http.get("/Cat/").json() == []
        assert http.put("/Cat/7", json={"name": "tom"}).status_code == 204
    assert running.stop() == 0
    assert "Traceback" not in running.output()


def test_a_broken_schema_keeps_the_last_good_version(running: Dev) -> None:
    with httpx.Client(base_url=running.url, auth=ADMIN_AUTH, timeout=10) as http:
        assert http.put("/Dog/2", json={"name": "fido"}).status_code == 204

        report = running.edit("schema.graphql", BROKEN)
        assert "last good version keeps serving" in report, report
        assert re.search(r"^error: schema\.graphql:8:8: syntax error", report, re.M), report
        assert re.search(r"^\s+hint: ", report, re.M), report
        assert http.get("/Dog/2").json() == {"id": 2, "name": "fido"}
        assert http.get("/Cat/").status_code == 404

        report = running.edit("schema.graphql", DOG_AND_CAT)
        assert "serving the new version" in report, report
        assert http.get("/Cat/").status_code == 200
        assert http.get("/Dog/2").json() == {"id": 2, "name": "fido"}


def test_a_broken_config_is_reported_and_ignored(running: Dev) -> None:
    with httpx.Client(base_url=running.url, auth=ADMIN_AUTH, timeout=10) as http:
        assert http.put("/Dog/3", json={"name": "rex"}).status_code == 204
        report = running.edit("config.yaml", "http:\n  maxBodySize: lots\n")
        assert re.search(r"^error: config\.yaml:2:16: `http\.maxBodySize` expects", report, re.M)
        assert "last good version keeps serving" in report, report
        assert http.get("/Dog/3").json() == {"id": 3, "name": "rex"}

        report = running.edit("config.yaml", "http:\n  maxBodySize: 20\n")
        assert "serving the new version" in report, report
        assert http.put("/Dog/4", json={"name": "a long name"}).status_code == 413


def test_a_new_address_needs_a_restart(running: Dev) -> None:
    report = running.edit("config.yaml", "http:\n  host: 127.0.0.2\n")
    assert "restart kiln dev" in report, report
    assert f"still at http://127.0.0.1:{running.port}/" in report, report
    assert httpx.get(f"{running.url}/_health", timeout=5).status_code == 200


def test_requests_during_reloads_are_answered(running: Dev) -> None:
    answers: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=running.url, auth=ADMIN_AUTH, timeout=10) as http:
            key = 0
            while not stop.is_set():
                key += 1
                try:
                    answers.append(http.put(f"/Dog/{key}", json={"name": f"d{key}"}).status_code)
                    answers.append(http.get(f"/Dog/{key}").status_code)
                except httpx.HTTPError as error:
                    failures.append(error)
                    return

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for schema in (DOG_AND_CAT, DOG, DOG_AND_CAT):
            time.sleep(0.2)
            assert "serving the new version" in running.edit("schema.graphql", schema)
        time.sleep(0.2)
    finally:
        stop.set()
        for worker in workers:
            worker.join(15)
    assert not failures, failures
    assert answers and set(answers) <= {200, 204}, sorted(set(answers))
    assert "Traceback" not in running.output()


def test_an_app_that_fails_to_open_brings_the_last_one_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_app`` failing after the checks passed (say, a schema change the data refuses)."""
    app_dir = write_app(tmp_path / "app", DOG)
    reported: list[KilnError] = []

    async def scenario() -> None:
        app = load_app(app_dir, load_config(app_dir, env={}))
        reloader = dev.Reloader(app, {}, reported.append)
        try:
            (app_dir / "schema.graphql").write_text(DOG_AND_CAT)

            def refuse(directory: Path, config: object) -> object:
                monkeypatch.undo()
                raise SchemaError("the stored data cannot take this change", file="schema.graphql")

            monkeypatch.setattr(dev, "load_app", refuse)
            await reloader.reload(["schema.graphql"])
            assert [str(error) for error in reported] == [
                "schema.graphql: the stored data cannot take this change"
            ]
            assert list(reloader.app.routes) == ["Dog"]
            assert reloader.handler.handler.app is reloader.app

            await reloader.reload(["schema.graphql"])  # the next change reads the app's folder
            assert list(reloader.app.routes) == ["Dog", "Cat"]
            assert reloader.app.directory == app_dir
        finally:
            reloader.close()

    asyncio.run(scenario())


GREETING = """from kiln import Resource


class Greeting(Resource):
    def get(self, target):
        return {"hello": "%s"}
"""


def test_a_broken_resources_py_keeps_the_last_good_version(running: Dev) -> None:
    with httpx.Client(base_url=running.url, auth=ADMIN_AUTH, timeout=10) as http:
        report = running.edit("resources.py", GREETING % "one")
        assert "serving the new version" in report, report
        assert "new /Greeting/" in report, report
        assert http.get("/Greeting/").json() == {"hello": "one"}

        report = running.edit("resources.py", GREETING % "two" + "\nboom = 1 / 0\n")
        assert "last good version keeps serving" in report, report
        assert re.search(r"^error: resources\.py:8: ZeroDivisionError", report, re.M), report
        assert http.get("/Greeting/").json() == {"hello": "one"}

        report = running.edit("resources.py", GREETING.replace("target)", ")") % "three")
        assert "last good version keeps serving" in report, report
        assert "Greeting.get(self) does not match the seam" in report, report
        assert http.get("/Greeting/").json() == {"hello": "one"}

        report = running.edit("resources.py", GREETING % "four")
        assert "serving the new version" in report, report
        assert http.get("/Greeting/").json() == {"hello": "four"}
        assert http.put("/Dog/9", json={"name": "rex"}).status_code == 204
    assert "Traceback" not in running.output()


def test_a_failed_open_falls_back_to_the_last_good_resources_py(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot the fallback reopens holds resources.py too."""
    app_dir = write_app(tmp_path / "app", DOG, resources=GREETING % "good")
    reported: list[KilnError] = []

    async def scenario() -> None:
        app = load_app(app_dir, load_config(app_dir, env={}))
        reloader = dev.Reloader(app, {}, reported.append)
        try:
            (app_dir / "resources.py").write_text(GREETING.replace("Greeting", "Hello") % "new")

            def refuse(directory: Path, config: object) -> object:
                monkeypatch.undo()
                raise SchemaError("the stored data cannot take this change", file="schema.graphql")

            monkeypatch.setattr(dev, "load_app", refuse)
            await reloader.reload(["resources.py"])
            assert list(reloader.app.routes) == ["Dog", "Greeting"]
        finally:
            reloader.close()

    asyncio.run(scenario())


def test_mistakes_that_stopped_kiln_dev_keep_the_last_good_version(running: Dev) -> None:
    """Bytes that are not UTF-8, ``sys.exit()`` and KeyboardInterrupt used to end kiln dev."""
    not_utf8 = (GREETING % "two").encode() + b"\n# caf\xe9\n"
    mistakes = [
        (not_utf8, f"resources.py:8: the file is not UTF-8 text (byte {len(not_utf8) - 2})"),
        (
            GREETING % "three" + "\nimport sys\n\nsys.exit(3)\n",
            "resources.py:10: resources.py called sys.exit(3) while kiln imported it",
        ),
        (
            GREETING % "four" + "\nraise KeyboardInterrupt\n",
            "resources.py:8: resources.py raised KeyboardInterrupt while kiln imported it",
        ),
    ]
    with httpx.Client(base_url=running.url, auth=ADMIN_AUTH, timeout=10) as http:
        assert "serving the new version" in running.edit("resources.py", GREETING % "one")
        for text, expected in mistakes:
            report = running.edit("resources.py", text)
            assert "last good version keeps serving" in report, report
            assert re.search(rf"^error: {re.escape(expected)}\n  hint: ", report, re.M), report
            assert http.get("/Greeting/").json() == {"hello": "one"}

        # the check stops at the first use of records; opening the new version meets the exit
        seeding = "import sys\n\nfrom kiln import tables\n\n" + GREETING % "five"
        seeding += "\ntables.Dog.records.put(5, {'name': 'seed'})\nsys.exit()\n"
        report = running.edit("resources.py", seeding)
        assert "the new version failed to open, so the last one is back" in report, report
        assert "resources.py:13: resources.py called sys.exit() while kiln imported it" in report
        assert http.get("/Greeting/").json() == {"hello": "one"}
    assert running.stop() == 0
    assert "Traceback" not in running.output()


def test_a_method_named_like_a_seam_method_is_warned_once_per_reload(running: Dev) -> None:
    """The check before a reload stays quiet: the load that follows warns."""
    report = running.edit("resources.py", GREETING.replace("def get(", "def gett(") % "x")
    assert "serving the new version" in report, report
    warning = (
        "resources.py:5: Greeting.gett is not a seam method, so kiln never calls it; "
        "did you mean get?"
    )
    assert running.output().count(warning) == 1, running.output()
