"""A stream that fails after its status was sent must never read as a complete response.

(A failure before the first chunks leave is an ordinary 500 problem response.)
"""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest

from conftest import KilnServer

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String
}
"""

RESOURCES = """
from kiln import Resource


class Flaky(Resource):
    def get(self, target):
        def rows():
            for number in range(5000):  # ~1 MB: well past the first chunks sent
                yield {"n": number, "pad": "x" * 200}
            raise RuntimeError("the source went away")
        return rows()


class Early(Resource):
    def get(self, target):
        def rows():
            yield {"n": 0}
            raise RuntimeError("failed at once")
        return rows()
"""


def test_a_failure_before_streaming_starts_is_a_500(http: httpx.Client) -> None:
    response = http.get("/Early/")
    assert response.status_code == 500
    assert "error id" in response.json()["detail"]


def test_json_stream_cut_short_is_not_valid_json(
    http: httpx.Client, kiln_server: KilnServer
) -> None:
    response = http.get("/Flaky/")
    assert response.status_code == 200  # the status left before the failure
    assert response.text.startswith('[{"n":0,')
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert "the source went away" in kiln_server.log()
    assert "error " in kiln_server.log()  # logged under an error id


@pytest.mark.parametrize(
    ("accept", "check"),
    [
        ("application/x-msgpack", "msgpack"),
        ("text/csv", "csv"),
    ],
)
def test_streams_without_a_closing_byte_end_unreadably(
    http: httpx.Client, accept: str, check: str
) -> None:
    response = http.get("/Flaky/", headers={"Accept": accept})
    assert response.status_code == 200
    if check == "msgpack":
        decoder = msgspec.msgpack.Decoder()
        body = response.content
        assert body.endswith(b"\xc1")
        with pytest.raises(msgspec.DecodeError):
            decoder.decode(body[body.rindex(b"\xc1") :])
    else:
        assert response.text.rstrip().splitlines()[-1].startswith('"kiln: the stream failed')
