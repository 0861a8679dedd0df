"""Last Wills and the rights behind them, against a real server with roles: a will is
published with the rights its user has when it is published, and not at all when the
connection ended because the user was removed or its role changed.

Users are changed in the running server's system database from this process, as
``kiln user remove`` and ``kiln user role`` do.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from mqtt_clients import Paho, Raw, client_id

from conftest import KilnServer
from kiln.auth.passwords import hash_password
from kiln.auth.users import SYSTEM_FOLDER, UserStore
from kiln.mqtt import MQTT_3_1_1, MQTT_5, Disconnect, Properties, ReasonCode, Will

SCHEMA = """
type Dog @table @export {
  id: ID @primaryKey
  name: String
}
"""

CONFIG = """
roles:
  editor:
    data:
      Dog: {read: true, insert: true, update: true}
  clerk:
    data:
      Dog: {read: true, insert: true, update: true}
  reader:
    data:
      Dog: {read: true}
"""

_numbers = itertools.count(1)

REVOKE: dict[str, Callable[[UserStore, str], object]] = {
    "removed": lambda users, name: users.remove(name),
    "demoted": lambda users, name: users.set_role(name, "reader"),
}
"""The changes after which a user's will may no longer write a ``Dog``."""
CHANGE = REVOKE | {"moved": lambda users, name: users.set_role(name, "clerk")}
"""The changes that end a user's connections: also a new role that may still write."""
WHY = {
    "removed": "was not published: its credentials were refused",
    "demoted": "was refused: ",
}
"""What the log says of such a will."""


@pytest.fixture(scope="module")
def users(kiln_server: KilnServer) -> Iterator[UserStore]:
    """The running server's system database, opened from this process."""
    store = UserStore(kiln_server.data_dir / SYSTEM_FOLDER)
    yield store
    store.close()


@pytest.fixture()
def editor(users: UserStore) -> tuple[str, str]:
    """A new user whose role may write a ``Dog``: its name and password."""
    name = f"editor{next(_numbers)}"
    users.add(name, "editor", hash_password(f"{name}-password"))
    return name, f"{name}-password"


@pytest.fixture()
def watcher(kiln_server: KilnServer) -> Iterator[Paho]:
    """The admin, connected with MQTT 5 (it hears a published will)."""
    with Paho(kiln_server.mqtt_port).connect() as client:
        yield client


def retained_will(dog: str, **properties: int) -> Will:
    """A will that writes the record ``Dog/<dog>`` (a retained will is a put)."""
    return Will(
        topic=f"Dog/{dog}",
        payload=b'{"name": "the will"}',
        qos=1,
        retain=True,
        properties=Properties(**properties),
    )


def never_written(http: httpx.Client, dog: str, watcher: Paho, seconds: float) -> bool:
    """Whether ``Dog/<dog>`` stays absent, and the watcher hears nothing, for ``seconds``."""
    return watcher.quiet(seconds) and http.get(f"/Dog/{dog}").status_code == 404


def test_an_unchanged_users_will_is_published(
    kiln_server: KilnServer, http: httpx.Client, editor: tuple[str, str], watcher: Paho
) -> None:
    """The baseline: a user with the right publishes its will when its socket drops."""
    dog = f"kept{next(_numbers)}"
    watcher.subscribe(f"Dog/{dog}")
    with Raw(kiln_server.mqtt_port, MQTT_3_1_1) as raw:
        raw.connect(auth=editor, will=retained_will(dog))
    assert json.loads(watcher.next().payload) == {"id": dog, "name": "the will"}
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "the will"}


@pytest.mark.parametrize("change", sorted(CHANGE))
def test_a_revoked_users_connection_ends_without_its_will(
    kiln_server: KilnServer,
    http: httpx.Client,
    users: UserStore,
    editor: tuple[str, str],
    watcher: Paho,
    change: str,
) -> None:
    """The connection ends because its credentials no longer hold: its will is not
    published, even when the user's new role could write it."""
    dog = f"revoked{next(_numbers)}"
    watcher.subscribe(f"Dog/{dog}")
    with Raw(kiln_server.mqtt_port, MQTT_5) as raw:
        raw.connect(auth=editor, will=retained_will(dog))
        CHANGE[change](users, editor[0])
        [disconnect] = raw.closed_by_broker()
    assert isinstance(disconnect, Disconnect)
    assert disconnect.reason_code == ReasonCode.NOT_AUTHORIZED
    assert never_written(http, dog, watcher, 1.0)


@pytest.mark.parametrize("change", sorted(REVOKE))
def test_a_will_has_the_rights_of_the_moment_it_is_published(
    kiln_server: KilnServer,
    http: httpx.Client,
    users: UserStore,
    editor: tuple[str, str],
    watcher: Paho,
    change: str,
) -> None:
    """The socket drops right after the change, before the connection's recheck sees it:
    the will is checked against the user as it is then."""
    dog, name = f"dropped{next(_numbers)}", client_id()
    watcher.subscribe(f"Dog/{dog}")
    with Raw(kiln_server.mqtt_port, MQTT_3_1_1) as raw:
        raw.connect(name, auth=editor, will=retained_will(dog))
        REVOKE[change](users, editor[0])
    assert never_written(http, dog, watcher, 1.0)
    assert f"the will of {name!r} to Dog/{dog} {WHY[change]}" in kiln_server.log()


@pytest.mark.parametrize("change", sorted(REVOKE))
def test_a_delayed_will_has_the_rights_of_the_moment_it_is_due(
    kiln_server: KilnServer,
    http: httpx.Client,
    users: UserStore,
    editor: tuple[str, str],
    watcher: Paho,
    change: str,
) -> None:
    """An MQTT 5 will delay: the user changes after its client left, before the will is due."""
    dog = f"delayed{next(_numbers)}"
    watcher.subscribe(f"Dog/{dog}")
    with Raw(kiln_server.mqtt_port, MQTT_5) as raw:
        expiry = Properties(session_expiry_interval=60)
        raw.connect(auth=editor, will=retained_will(dog, will_delay_interval=1), properties=expiry)
    time.sleep(0.2)  # the broker saw the client go: the will waits out its delay
    REVOKE[change](users, editor[0])
    assert never_written(http, dog, watcher, 2.0)
