"""End to end in headless Chromium: the browser's own EventSource and WebSocket.

The page is served by the app itself (a resource returning HTML), so it is
same-origin with the API. Chromium is driven through ChromeDriver's W3C WebDriver
HTTP API with httpx (no extra client library): the test loads the page, waits for
both streams to deliver the record's current state, writes over REST, and reads
what the page received.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import KilnServer, free_port

SCHEMA = """
type Dog @table @export {
  id: ID @primaryKey
  name: String
}
"""

CONFIG = """
roles:
  anonymous:  # the page, EventSource and WebSocket send no credentials
    data:
      Dog: {read: true, update: true}
"""

RESOURCES = '''
from kiln import Resource, Response

PAGE = """<!doctype html>
<title>kiln real-time</title>
<script>
window.received = {sse: [], ws: []};
const id = new URLSearchParams(location.search).get("id");
const source = new EventSource("/Dog/" + id);
for (const type of ["put", "patch", "delete", "message"]) {
  source.addEventListener(type, (e) => window.received.sse.push(JSON.parse(e.data)));
}
const socket = new WebSocket("ws://" + location.host + "/Dog/" + id);
socket.onmessage = (e) => window.received.ws.push(JSON.parse(e.data));
window.say = (text) => socket.send(JSON.stringify({text}));
</script>
"""


class Page(Resource):
    def allow_read(self, target):
        return True

    def get(self, target):
        return Response(200, {"Content-Type": "text/html; charset=utf-8"}, PAGE)
'''

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    (CHROMEDRIVER is None or CHROMIUM is None) and not os.environ.get("CI"),
    reason="chromium and chromium-driver are not installed (.ci/run installs them)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[tuple[httpx.Client, str]]:
    """A headless Chromium session: (a client for ChromeDriver, the session id)."""
    assert CHROMEDRIVER is not None and CHROMIUM is not None, "install chromium-driver"
    port = free_port()
    driver = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.get("/status").json()["value"]["ready"]:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.1)
        options = {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        }
        capabilities = {"alwaysMatch": {"goog:chromeOptions": options}}
        response = client.post("/session", json={"capabilities": capabilities})
        assert response.status_code == 200, response.text
        session = response.json()["value"]["sessionId"]
        yield client, session
        client.delete(f"/session/{session}")
    finally:
        client.close()
        driver.terminate()
        driver.wait(10)


def run_script(browser: tuple[httpx.Client, str], script: str, *args: Any) -> Any:
    """Run ``script`` (a function body) in the page and return its value."""
    client, session = browser
    response = client.post(
        f"/session/{session}/execute/sync", json={"script": script, "args": list(args)}
    )
    assert response.status_code == 200, response.text
    return response.json()["value"]


def wait_for(browser: tuple[httpx.Client, str], condition: str, timeout: float = 15) -> Any:
    """Poll the page until the JavaScript expression ``condition`` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = run_script(browser, f"return {condition};")
        if value:
            return value
        assert time.monotonic() < deadline, f"the page never saw {condition}"
        time.sleep(0.1)


def test_browser_event_source_and_websocket(
    kiln_server: KilnServer, http: httpx.Client, browser: tuple[httpx.Client, str]
) -> None:
    dog = uuid.uuid4().hex
    assert http.put(f"/Dog/{dog}", json={"name": "Rex"}).status_code == 204
    client, session = browser
    response = client.post(
        f"/session/{session}/url", json={"url": f"{kiln_server.url}/Page/?id={dog}"}
    )
    assert response.status_code == 200, response.text
    wait_for(browser, "window.received.sse.length >= 1 && window.received.ws.length >= 2")
    assert http.patch(f"/Dog/{dog}", json={"name": "Max"}).status_code == 204
    wait_for(browser, "window.received.sse.length >= 2 && window.received.ws.length >= 3")
    run_script(browser, "window.say('hello from the browser');")
    received = wait_for(
        browser,
        "window.received.sse.length >= 3 && window.received.ws.length >= 4 && window.received",
    )
    sync = received["ws"].pop(1)  # the socket's end of the current records: a resume point
    assert (sync["type"], sync["id"]) == ("sync", None)
    assert sync["version"] >= received["ws"][0]["version"]
    for stream in ("sse", "ws"):
        current, patched, message = received[stream][:3]
        assert (current["type"], current["value"]["name"]) == ("put", "Rex")
        assert (patched["type"], patched["value"]["name"], patched["patch"]) == (
            "patch",
            "Max",
            {"name": "Max"},
        )
        assert (message["type"], message["value"]) == (
            "message",
            {"text": "hello from the browser"},
        )
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Max"}
