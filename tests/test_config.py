"""Tests for kiln.config: reading config.yaml, KILN_* variables and command-line overrides."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from kiln import config as config_module
from kiln.config import (
    BOOL,
    DURATION,
    MAP,
    PORT,
    SETTINGS,
    SIZE,
    STRING,
    AuthenticationConfig,
    Config,
    HttpConfig,
    InvalidValue,
    LoggingConfig,
    MqttConfig,
    QueryConfig,
    RealtimeConfig,
    Setting,
    Source,
    StorageConfig,
    choice,
    directory,
    env_name,
    load_config,
)
from kiln.config import loader as config_loader
from kiln.config import settings as config_settings
from kiln.errors import ConfigError

MiB = 1024 * 1024


def write(app_dir: Path, text: str) -> Path:
    """Write ``config.yaml`` into ``app_dir``."""
    (app_dir / "config.yaml").write_text(text, encoding="utf-8")
    return app_dir


def load(app_dir: Path, text: str | None = None, **kwargs: object) -> Config:
    """Load with an empty environment unless one is given."""
    if text is not None:
        write(app_dir, text)
    kwargs.setdefault("env", {})
    return load_config(app_dir, **kwargs)  # type: ignore[arg-type]


def error(app_dir: Path, text: str | None = None, **kwargs: object) -> str:
    """The text of the ConfigError loading raises."""
    with pytest.raises(ConfigError) as caught:
        load(app_dir, text, **kwargs)
    return str(caught.value)


# --------------------------------------------------------------------------- defaults


def assert_defaults(cfg: Config, app_dir: Path) -> None:
    assert cfg.app_dir == app_dir.resolve()
    assert cfg.http == HttpConfig(
        host="127.0.0.1",
        port=9926,
        max_body_size=10 * MiB,
        workers=1,
        access_log=False,
        compression_threshold=1024,
        cors=(),
    )
    assert cfg.storage == StorageConfig(path=app_dir.resolve() / ".kiln", map_size=256 * MiB)
    assert cfg.logging == LoggingConfig(level="info", audit_retention=3 * 86400.0)
    assert cfg.realtime.heartbeat == 15.0
    assert cfg.mqtt.port == 1883
    assert cfg.warnings == ()
    for setting in SETTINGS:
        assert cfg.source(setting.key) == Source.DEFAULT == "default"


def test_absent_file_gives_defaults(tmp_path: Path) -> None:
    assert_defaults(load(tmp_path), tmp_path)


@pytest.mark.parametrize(
    "text",
    ["", "\n", "# nothing set yet\n", "---\n", "~\n", "http:\nstorage:\n  # path: data\n"],
    ids=["empty", "newline", "comment", "document-marker", "null", "empty-sections"],
)
def test_empty_file_gives_defaults(tmp_path: Path, text: str) -> None:
    assert_defaults(load(tmp_path, text), tmp_path)


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_HTTP_PORT", "7001")
    cfg = load_config(tmp_path)
    assert cfg.http.port == 7001
    assert cfg.source("http.port") == "environment"


# --------------------------------------------------------------------------- reading


def test_nested_values_are_read(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
http:
  host: 0.0.0.0
  port: 8080
  maxBodySize: 512KB
  workers: 4
  accessLog: true
  compressionThreshold: 2KiB
  cors: [https://App.example.com, "http://localhost:3000"]
storage:
  path: data
  mapSize: 1GiB
query:
  allowScans: true
  maxSortRows: 500
authentication:
  tokenTimeout: 1h
  refreshTokenTimeout: 2d
  cacheTimeout: 5s
  trustLoopback: true
roles:
  reader: {data: {Dog: {read: true}}}
realtime:
  subscriberQueue: 50
  heartbeat: 5s
mqtt:
  port: 1884
  webSocketPort: 9928
  payloadFormat: cbor
  maxPacketSize: 64KiB
logging:
  level: debug
  auditRetention: 1h
""",
    )
    assert cfg.http == HttpConfig(
        host="0.0.0.0",
        port=8080,
        max_body_size=512_000,
        workers=4,
        access_log=True,
        compression_threshold=2048,
        cors=("https://app.example.com", "http://localhost:3000"),
    )
    assert cfg.authentication == AuthenticationConfig(
        token_timeout=3600.0,
        refresh_token_timeout=2 * 86400.0,
        cache_timeout=5.0,
        trust_loopback=True,
    )
    assert dict(cfg.roles) == {"reader": {"data": {"Dog": {"read": True}}}}
    assert cfg.storage == StorageConfig(path=tmp_path.resolve() / "data", map_size=1024**3)
    assert cfg.logging.level == "debug"
    assert cfg.logging.audit_retention == 3600.0
    assert (cfg.realtime.subscriber_queue, cfg.realtime.heartbeat) == (50, 5.0)
    assert (cfg.mqtt.port, cfg.mqtt.payload_format, cfg.mqtt.max_packet_size) == (
        1884,
        "cbor",
        65536,
    )
    for setting in SETTINGS:
        assert cfg.source(setting.key) == "config.yaml"


def test_flow_style(tmp_path: Path) -> None:
    cfg = load(tmp_path, "{http: {port: 9000}, logging: {level: warning}}\n")
    assert cfg.http.port == 9000
    assert cfg.logging.level == "warning"


def test_yaml_merge_key_is_applied(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
http:
  port: 9000
storage:
  <<: {mapSize: 1MiB}
  path: db
""",
    )
    assert cfg.http.port == 9000
    assert cfg.storage.map_size == MiB


def test_value_and_source_by_key(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        "http:\n  port: 8000\n",
        env={"KILN_LOGGING_LEVEL": "error"},
        overrides={"http.accessLog": True},
    )
    assert cfg.value("http.port") == 8000
    assert cfg.value("http.maxBodySize") == 10 * MiB
    assert cfg.value("storage.path") == tmp_path.resolve() / ".kiln"
    assert cfg.source("http.port") == "config.yaml"
    assert cfg.source("logging.level") == "environment"
    assert cfg.source("http.accessLog") == "command line"
    assert cfg.source("http.host") == "default"
    with pytest.raises(KeyError, match=re.escape("did you mean 'http.port'")):
        cfg.value("http.prot")
    with pytest.raises(KeyError):
        cfg.source("nope")


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.http.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.warnings = ("x",)  # type: ignore[misc]


# --------------------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    ("key", "yaml_text", "env_name_", "env_value", "override", "attribute", "expected"),
    [
        (
            "http.port",
            "http:\n  port: 1000\n",
            "KILN_HTTP_PORT",
            "2000",
            3000,
            ("http", "port"),
            (1000, 2000, 3000),
        ),
        (
            "http.host",
            "http:\n  host: 10.0.0.1\n",
            "KILN_HTTP_HOST",
            "10.0.0.2",
            "10.0.0.3",
            ("http", "host"),
            ("10.0.0.1", "10.0.0.2", "10.0.0.3"),
        ),
        (
            "http.maxBodySize",
            "http:\n  maxBodySize: 1KB\n",
            "KILN_HTTP_MAXBODYSIZE",
            "2KB",
            "3KB",
            ("http", "max_body_size"),
            (1000, 2000, 3000),
        ),
        (
            "http.accessLog",
            "http:\n  accessLog: true\n",
            "KILN_HTTP_ACCESSLOG",
            "false",
            True,
            ("http", "access_log"),
            (True, False, True),
        ),
        (
            "logging.level",
            "logging:\n  level: debug\n",
            "KILN_LOGGING_LEVEL",
            "warning",
            "error",
            ("logging", "level"),
            ("debug", "warning", "error"),
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and "." in value else None,
)
def test_precedence(
    tmp_path: Path,
    key: str,
    yaml_text: str,
    env_name_: str,
    env_value: str,
    override: object,
    attribute: tuple[str, str],
    expected: tuple[object, object, object],
) -> None:
    section, name = attribute
    default = next(setting.default for setting in SETTINGS if setting.key == key)

    def effective(cfg: Config) -> object:
        return getattr(getattr(cfg, section), name)

    cfg = load(tmp_path)
    assert (effective(cfg), cfg.source(key)) == (default, "default")

    write(tmp_path, yaml_text)
    cfg = load(tmp_path)
    assert (effective(cfg), cfg.source(key)) == (expected[0], "config.yaml")

    cfg = load(tmp_path, env={env_name_: env_value})
    assert (effective(cfg), cfg.source(key)) == (expected[1], "environment")

    cfg = load(tmp_path, env={env_name_: env_value}, overrides={key: override})
    assert (effective(cfg), cfg.source(key)) == (expected[2], "command line")
    assert cfg.value(key) == expected[2]


def test_none_override_means_not_given(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        "http:\n  port: 1000\n",
        env={"KILN_HTTP_HOST": "::1"},
        overrides={"http.port": None, "http.host": None},
    )
    assert cfg.http.port == 1000
    assert cfg.source("http.port") == "config.yaml"
    assert cfg.http.host == "::1"
    assert cfg.source("http.host") == "environment"


# --------------------------------------------------------------------------- kinds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2048, 2048),
        ("2048", 2048),
        ("10MiB", 10 * MiB),
        ("10mib", 10 * MiB),
        ("10 MiB", 10 * MiB),
        ("512KB", 512_000),
        ("512kb", 512_000),
        ("1GB", 1_000_000_000),
        ("1GiB", 1024**3),
        ("3KiB", 3072),
        ("7B", 7),
        ("2TB", 2 * 1000**4),
    ],
)
def test_size_values(tmp_path: Path, value: object, expected: int) -> None:
    assert SIZE.check(value) == expected
    cfg = load(tmp_path, f"http:\n  maxBodySize: {value}\n")
    assert cfg.http.max_body_size == expected
    text = str(value)
    assert load(tmp_path, env={"KILN_HTTP_MAXBODYSIZE": text}).http.max_body_size == expected
    assert load(tmp_path, overrides={"http.maxBodySize": value}).http.max_body_size == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(15, 15.0), (0.5, 0.5), ("15", 15.0), ("500ms", 0.5), ("10m", 600.0), ("3d", 259200.0)],
)
def test_duration_values(tmp_path: Path, value: object, expected: float) -> None:
    assert DURATION.check(value) == expected
    cfg = load(tmp_path, env={"KILN_LOGGING_AUDITRETENTION": str(value)})
    assert cfg.logging.audit_retention == expected


@pytest.mark.parametrize("value", [0, -1, True, None, "", "3y", "d", "soon"])
def test_duration_rejects(value: object) -> None:
    with pytest.raises(InvalidValue):
        DURATION.check(value)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, None, "", "10XB", "MiB", "1.5GiB", "ten"])
def test_size_rejects(value: object) -> None:
    with pytest.raises(InvalidValue):
        SIZE.check(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
    ],
)
def test_boolean_text(tmp_path: Path, text: str, expected: bool) -> None:
    assert load(tmp_path, env={"KILN_HTTP_ACCESSLOG": text}).http.access_log is expected
    assert load(tmp_path, overrides={"http.accessLog": text}).http.access_log is expected


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("yes", True), ("off", False)])
def test_yaml_booleans(tmp_path: Path, text: str, expected: bool) -> None:
    assert load(tmp_path, f"http:\n  accessLog: {text}\n").http.access_log is expected


def test_kind_checks() -> None:
    assert PORT.check(1) == 1
    assert PORT.check(65535) == 65535
    for bad in (0, 65536, True, "80", 80.0, None):
        with pytest.raises(InvalidValue):
            PORT.check(bad)
    assert PORT.parse_text is not None
    assert PORT.parse_text(" 8080 ") == 8080
    for bad_text in ("", "8_080", "80.0", "-1", "eighty", "99999"):
        with pytest.raises(InvalidValue):
            PORT.parse_text(bad_text)
    assert STRING.check("x") == "x"
    with pytest.raises(InvalidValue):
        STRING.check(5)
    assert BOOL.check(False) is False
    for bad in ("true", 1, 0, None):
        with pytest.raises(InvalidValue):
            BOOL.check(bad)
    levels = choice("debug", "info")
    assert levels.check("INFO") == "info"
    with pytest.raises(InvalidValue, match='did you mean "debug"'):
        levels.check("debg")
    assert dict(MAP.check({"a": {"b": 1}})) == {"a": {"b": 1}}
    assert dict(MAP.check(None)) == {}
    with pytest.raises(InvalidValue):
        MAP.check([1])
    assert MAP.parse_text is None


def test_directory_kind() -> None:
    kind = directory(".kiln")
    assert kind.check(None) is None
    assert kind.check(Path("x")) == "x"
    assert kind.parse_text is not None
    assert kind.parse_text("") is None
    for bad in ("", 5, True):
        with pytest.raises(InvalidValue):
            kind.check(bad)


# --------------------------------------------------------------------------- storage.path


def test_storage_path_null_is_app_dir_dot_kiln(tmp_path: Path) -> None:
    cfg = load(tmp_path, "storage:\n  path: null\n")
    assert cfg.storage.path == tmp_path.resolve() / ".kiln"
    assert cfg.storage.path.is_absolute()
    assert cfg.source("storage.path") == "config.yaml"


def test_storage_path_relative_is_under_app_dir(tmp_path: Path) -> None:
    cfg = load(tmp_path, "storage:\n  path: var/db\n")
    assert cfg.storage.path == tmp_path.resolve() / "var" / "db"
    cfg = load(tmp_path, env={"KILN_STORAGE_PATH": "../elsewhere"})
    assert cfg.storage.path == tmp_path.resolve().parent / "elsewhere"


def test_storage_path_relative_to_relative_app_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load(Path("app"), "storage:\n  path: db\n")
    assert cfg.app_dir == tmp_path.resolve() / "app"
    assert cfg.storage.path == tmp_path.resolve() / "app" / "db"


def test_storage_path_absolute(tmp_path: Path) -> None:
    target = (tmp_path / "somewhere" / "db").resolve()
    cfg = load(tmp_path, f"storage:\n  path: {target}\n")
    assert cfg.storage.path == target
    other = (tmp_path / "other").resolve()
    assert load(tmp_path, overrides={"storage.path": other}).storage.path == other


# --------------------------------------------------------------------------- config.yaml errors


def test_unknown_key_deep(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  port: 80\n  prot: 81\n")
    assert text == (
        "config.yaml:3:3: unknown setting `http.prot`\n  hint: did you mean `http.port`?"
    )


def test_unknown_key_shallow(tmp_path: Path) -> None:
    text = error(tmp_path, "logging:\n  level: info\nhtp:\n  port: 80\n")
    assert text == "config.yaml:3:1: unknown setting `htp`\n  hint: did you mean `http`?"


def test_unknown_key_case_and_snake_case_are_suggested(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  max_body_size: 1MiB\n")
    assert text.endswith("hint: did you mean `http.maxBodySize`?")
    text = error(tmp_path, "http:\n  accesslog: true\n")
    assert text.endswith("hint: did you mean `http.accessLog`?")


def test_unknown_key_without_close_match_lists_section(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  zzzzzz: 1\n")
    assert text == (
        "config.yaml:2:3: unknown setting `http.zzzzzz`\n"
        "  hint: `http` holds: host, port, maxBodySize, workers, accessLog, "
        "compressionThreshold, cors"
    )
    text = error(tmp_path, "qqqqqq: 1\n")
    assert text == (
        "config.yaml:1:1: unknown setting `qqqqqq`\n"
        "  hint: the sections are: http, storage, query, realtime, mqtt, authentication, "
        "roles, logging"
    )


def test_unknown_key_below_a_setting(tmp_path: Path) -> None:
    # A setting's value is not a section: `port: {number: 1}` is a bad value.
    text = error(tmp_path, "http:\n  port:\n    number: 1\n")
    assert text.startswith(
        "config.yaml:3:5: `http.port` expects a port number from 1 to 65535, got a map\n"
    )


def test_bad_port(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  port: abc\n")
    assert text == (
        'config.yaml:2:9: `http.port` expects a port number from 1 to 65535, got "abc"\n'
        "  hint: write the number without quotes, e.g. 9926"
    )


def test_port_out_of_range(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  host: localhost\n  port: 70000\n")
    assert text == (
        "config.yaml:3:9: `http.port` expects a port number from 1 to 65535, got 70000\n"
        "  hint: ports run from 1 to 65535"
    )


def test_bool_given_for_port(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  port: true\n")
    assert text.startswith(
        "config.yaml:2:9: `http.port` expects a port number from 1 to 65535, got true\n"
    )


def test_null_given_for_port(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  port:\n")
    assert text.startswith("config.yaml:2:8: `http.port` expects a port number")
    assert "got null" in text


def test_string_given_for_boolean(tmp_path: Path) -> None:
    text = error(tmp_path, 'http:\n  accessLog: "yes"\n')
    assert text == (
        'config.yaml:2:14: `http.accessLog` expects true or false, got "yes"\n'
        "  hint: write true or false, without quotes"
    )


def test_number_given_for_boolean(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  accessLog: 1\n")
    assert text.startswith("config.yaml:2:14: `http.accessLog` expects true or false, got 1\n")


def test_number_given_for_string(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  host: 5\n")
    assert text.startswith("config.yaml:2:9: `http.host` expects an address to listen on, got 5\n")


def test_bad_size_unit(tmp_path: Path) -> None:
    text = error(tmp_path, "storage:\n  mapSize: 10XB\n")
    assert text == (
        "config.yaml:2:12: `storage.mapSize` expects a size in bytes, such as 10485760 or "
        '"10MiB", got "10XB"\n'
        '  hint: unknown unit "XB"; units are B, KB, MB, GB, TB (powers of 1000) and '
        'KiB, MiB, GiB, TiB (powers of 1024), in any case, e.g. "10MiB"'
    )


def test_bad_level(tmp_path: Path) -> None:
    text = error(tmp_path, "logging:\n  level: warn\n")
    assert text == (
        "config.yaml:2:10: `logging.level` expects one of debug, info, warning, error, "
        'got "warn"\n'
        '  hint: did you mean "warning"?'
    )
    text = error(tmp_path, "logging:\n  level: verbose\n")
    assert text.endswith("hint: write one of debug, info, warning, error")


def test_bad_storage_path(tmp_path: Path) -> None:
    text = error(tmp_path, "storage:\n  path: [a, b]\n")
    assert text.startswith(
        "config.yaml:2:9: `storage.path` expects a directory path, or null for APP_DIR/.kiln, "
        "got a list\n"
    )


def test_yaml_syntax_error(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  port: 80\n  host: 'unclosed\n")
    assert text == (
        "config.yaml:3:9: YAML syntax error: the quoted text that starts here never ends\n"
        "  hint: add its closing quote"
    )


def test_yaml_syntax_error_without_context(tmp_path: Path) -> None:
    text = error(tmp_path, "http: port: 80\n")
    assert text == (
        "config.yaml:1:11: YAML syntax error: mapping values are not allowed here\n"
        "  hint: indent with spaces (not tabs) and put a space after each `key:`"
    )


def test_yaml_tab_indentation(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n\tport: 80\n")
    assert text == (
        "config.yaml:2:1: YAML syntax error: found character '\\t' that cannot start any token\n"
        "  hint: indent with spaces; YAML does not allow tabs"
    )


def test_two_documents(tmp_path: Path) -> None:
    text = error(tmp_path, "http: {}\n---\nhttp: {}\n")
    assert text.startswith("config.yaml:2:1: YAML syntax error: but found another document\n")


def test_list_at_top_level(tmp_path: Path) -> None:
    text = error(tmp_path, "- http\n- storage\n")
    assert text == (
        "config.yaml:1:1: config.yaml must be a map of settings, got a list\n"
        "  hint: write sections such as `http:` with their settings indented below"
    )


def test_scalar_at_top_level(tmp_path: Path) -> None:
    text = error(tmp_path, "port 80\n")
    assert text.startswith('config.yaml:1:1: config.yaml must be a map of settings, got "port 80"')


def test_scalar_section(tmp_path: Path) -> None:
    text = error(tmp_path, "logging:\n  level: info\nhttp: 5\n")
    assert text == (
        "config.yaml:3:7: `http` is a section and must be a map of settings, got 5\n"
        "  hint: write its settings indented below `http:`; "
        "`http` holds: host, port, maxBodySize, workers, accessLog, compressionThreshold, cors"
    )


def test_list_section(tmp_path: Path) -> None:
    text = error(tmp_path, "storage:\n  - path: db\n")
    assert text.startswith(
        "config.yaml:2:3: `storage` is a section and must be a map of settings, got a list\n"
    )


def test_duplicate_key(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  port: 80\n  port: 81\n")
    assert text == (
        "config.yaml:3:3: `http.port` is given twice\n  hint: it is first given at line 2; keep one"
    )


def test_non_name_key(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  [a]: 1\n")
    assert text.startswith("config.yaml:2:3: a key must be a name, got a list\n")


def test_unsafe_tag_is_rejected(tmp_path: Path) -> None:
    text = error(tmp_path, "http:\n  host: !!python/name:os.system\n")
    assert text.startswith("config.yaml:2:9: YAML syntax error: could not determine a constructor")


def test_file_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_bytes(b"http:\n  host: \xff\n")
    text = error(tmp_path)
    assert text == "config.yaml: the file is not UTF-8 text (byte 14)\n  hint: save it as UTF-8"


def test_file_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").mkdir()
    assert error(tmp_path).startswith("config.yaml: cannot read the file: ")


# --------------------------------------------------------------------------- environment


def test_bad_env_value(tmp_path: Path) -> None:
    text = error(tmp_path, env={"KILN_HTTP_PORT": "abc"})
    assert text == (
        "environment: KILN_HTTP_PORT (`http.port`) expects a port number from 1 to 65535, "
        'got "abc"\n'
        "  hint: write the number alone, e.g. 9926"
    )


def test_bad_env_boolean(tmp_path: Path) -> None:
    text = error(tmp_path, env={"KILN_HTTP_ACCESSLOG": "maybe"})
    assert text == (
        'environment: KILN_HTTP_ACCESSLOG (`http.accessLog`) expects true or false, got "maybe"\n'
        "  hint: use true or false (1/0, yes/no and on/off also work)"
    )


def test_bad_env_size(tmp_path: Path) -> None:
    text = error(tmp_path, env={"KILN_STORAGE_MAPSIZE": "lots"})
    assert text.startswith(
        "environment: KILN_STORAGE_MAPSIZE (`storage.mapSize`) expects a size in bytes"
    )


def test_file_is_checked_even_when_the_environment_overrides(tmp_path: Path) -> None:
    # config.yaml is checked even when the environment overrides the same key.
    text = error(tmp_path, "http:\n  port: abc\n", env={"KILN_HTTP_PORT": "8080"})
    assert text.startswith("config.yaml:2:9: ")


def test_unknown_kiln_variable_warns(tmp_path: Path) -> None:
    cfg = load(tmp_path, env={"KILN_HTTP_PROT": "80", "KILN_ZZZZZZZZZZZZZZ": "1"})
    assert cfg.warnings == (
        "KILN_HTTP_PROT is not a kiln setting and was ignored; did you mean KILN_HTTP_PORT?",
        "KILN_ZZZZZZZZZZZZZZ is not a kiln setting and was ignored; see the settings in the docs",
    )
    assert cfg.http.port == 9926


def test_reserved_and_foreign_variables_are_silent(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        env={
            "KILN_ADMIN_USER": "admin",
            "KILN_ADMIN_PASSWORD": "secret",
            "HOME": "/home/x",
            "kiln_http_port": "1",
            "PATH": "/bin",
        },
    )
    assert cfg.warnings == ()
    assert cfg.http.port == 9926


def test_env_values_are_stripped(tmp_path: Path) -> None:
    cfg = load(tmp_path, env={"KILN_HTTP_PORT": " 8080\n", "KILN_LOGGING_LEVEL": " DEBUG "})
    assert cfg.http.port == 8080
    assert cfg.logging.level == "debug"


# --------------------------------------------------------------------------- command line


def test_bad_override(tmp_path: Path) -> None:
    text = error(tmp_path, overrides={"http.port": 0})
    assert text == (
        "command line: `http.port` expects a port number from 1 to 65535, got 0\n"
        "  hint: ports run from 1 to 65535"
    )


def test_bad_override_text(tmp_path: Path) -> None:
    text = error(tmp_path, overrides={"http.maxBodySize": "10XB"})
    assert text.startswith(
        "command line: `http.maxBodySize` expects a size in bytes, such as 10485760 or "
        '"10MiB", got "10XB"\n  hint: unknown unit "XB"'
    )


def test_unknown_override(tmp_path: Path) -> None:
    text = error(tmp_path, overrides={"http.prot": 80})
    assert text == "command line: unknown setting `http.prot`\n  hint: did you mean `http.port`?"


def test_override_text_is_parsed_like_the_environment(tmp_path: Path) -> None:
    cfg = load(tmp_path, overrides={"http.port": "8081", "http.accessLog": "yes"})
    assert cfg.http.port == 8081
    assert cfg.http.access_log is True


# --------------------------------------------------------------------------- the settings table


def test_every_setting_has_help_and_a_valid_default() -> None:
    assert SETTINGS
    for setting in SETTINGS:
        assert setting.help.strip(), setting.key
        assert setting.kind.check(setting.default) == setting.default, setting.key


def test_env_name_rule() -> None:
    assert env_name("http.port") == "KILN_HTTP_PORT"
    assert env_name("http.maxBodySize") == "KILN_HTTP_MAXBODYSIZE"
    names = []
    for setting in SETTINGS:
        if setting.kind is MAP:
            assert setting.env is None
            continue
        expected = "KILN_" + setting.key.upper().replace(".", "_")
        assert setting.env == expected
        assert expected not in config_module.RESERVED_ENV
        names.append(expected)
    assert len(names) == len(set(names))


def test_every_env_name_is_read(tmp_path: Path) -> None:
    for setting in SETTINGS:
        if setting.env is None:
            continue
        default = setting.default
        if isinstance(default, tuple):
            text = ",".join(default)
        else:
            text = "" if default is None else str(default).lower()
        cfg = load(tmp_path, env={setting.env: text})
        assert cfg.source(setting.key) == "environment"
        assert cfg.warnings == ()


def test_keys_are_unique_and_match_section_fields() -> None:
    keys = [setting.key for setting in SETTINGS]
    assert len(keys) == len(set(keys))
    sections = {
        "http": HttpConfig,
        "storage": StorageConfig,
        "query": QueryConfig,
        "realtime": RealtimeConfig,
        "mqtt": MqttConfig,
        "authentication": AuthenticationConfig,
        "logging": LoggingConfig,
    }
    expected = {
        (section, config_settings._attribute(rest))
        for section, _, rest in (key.partition(".") for key in keys)
        if rest
    }
    actual = {
        (name, each.name) for name, cls in sections.items() for each in dataclasses.fields(cls)
    }
    assert actual == expected
    top_level = {config_settings._attribute(key) for key in keys if "." not in key}
    assert {each.name for each in dataclasses.fields(Config)} >= set(sections) | top_level


def test_attribute_names() -> None:
    assert config_settings._attribute("maxBodySize") == "max_body_size"
    assert config_settings._attribute("accessLog") == "access_log"
    assert config_settings._attribute("port") == "port"


# --------------------------------------------------------------------------- a map-kind setting


ROLES_SETTINGS = (
    *SETTINGS,
    Setting("roles", MAP, {}, "Roles by name."),
    Setting("query.allowScans", BOOL, False, "Allow queries that scan a table."),
)


def read_with_roles(app_dir: Path, text: str, env: dict[str, str] | None = None) -> tuple:
    write(app_dir, text)
    return config_loader._read(app_dir, env or {}, {}, ROLES_SETTINGS)


def test_map_kind_setting(tmp_path: Path) -> None:
    values, sources, warnings = read_with_roles(
        tmp_path,
        """\
roles:
  editor:
    permissions: [read, write]
  reader: {permissions: [read]}
query:
  allowScans: true
""",
        env={"KILN_ROLES": "x", "KILN_QUERY_ALLOWSCANS": "false"},
    )
    assert dict(values["roles"]) == {
        "editor": {"permissions": ["read", "write"]},
        "reader": {"permissions": ["read"]},
    }
    assert sources["roles"] == "config.yaml"
    assert values["query.allowScans"] is False
    assert sources["query.allowScans"] == "environment"
    # A map-kind setting has no variable, so KILN_ROLES names nothing.
    assert len(warnings) == 1
    assert warnings[0].startswith("KILN_ROLES is not a kiln setting and was ignored")


def test_map_kind_rejects_scalar(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        read_with_roles(tmp_path, "roles: admin\n")
    assert str(caught.value) == (
        'config.yaml:1:8: `roles` expects a map, got "admin"\n'
        "  hint: write its entries indented below the key"
    )


def test_map_kind_null_is_empty(tmp_path: Path) -> None:
    values, sources, _ = read_with_roles(tmp_path, "roles:\n")
    assert dict(values["roles"]) == {}
    assert sources["roles"] == "config.yaml"


@pytest.mark.parametrize("text", ["http: [\n", "http:\n  cors: [a,\n    b,\n"])
def test_a_file_that_ends_inside_a_bracket_keeps_yamls_own_words(tmp_path: Path, text: str) -> None:
    reported = error(tmp_path, text)
    assert "YAML syntax error: " in reported
    assert "never ends" not in reported


@pytest.mark.parametrize(
    ("text", "where", "message", "hint"),
    [
        ("http:\n  cors: [a, b\n", "2:9", "the list `[` that starts here never ends", "`]`"),
        ("http: {port: 1\n", "1:7", "the map `{` that starts here never ends", "`}`"),
    ],
)
def test_an_unclosed_bracket_is_reported_where_it_opens(
    tmp_path: Path, text: str, where: str, message: str, hint: str
) -> None:
    reported = error(tmp_path, text)
    assert reported.startswith(f"config.yaml:{where}: YAML syntax error: {message}\n")
    assert hint in reported


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("127.0.0.1:9926", "write the address alone (127.0.0.1); the port goes in http.port"),
        ('"[::1]:9926"', "write the address alone (::1); the port goes in http.port"),
        ("http://localhost", "write the address alone, without a scheme or a path"),
        ('""', "write an address"),
        ('"[::1]"', "write an IPv6 address without brackets (::1)"),
    ],
)
def test_a_host_with_a_port_or_a_scheme_is_refused(tmp_path: Path, host: str, hint: str) -> None:
    text = error(tmp_path, f"http:\n  host: {host}\n")
    assert text.startswith("config.yaml:2:9: `http.host` expects an address to listen on")
    assert f"hint: {hint}" in text


def test_an_ipv6_host_is_accepted(tmp_path: Path) -> None:
    assert load(tmp_path, 'http:\n  host: "::1"\n').http.host == "::1"


@pytest.mark.parametrize("value", ["99.5", "true"])
def test_a_port_that_is_no_whole_number_gets_the_right_hint(tmp_path: Path, value: str) -> None:
    text = error(tmp_path, f"http:\n  port: {value}\n")
    assert "hint: write a whole number, e.g. 9926" in text


def test_a_negative_count_in_the_environment_says_so(tmp_path: Path) -> None:
    text = error(tmp_path, env={"KILN_HTTP_WORKERS": "-1"})
    assert "hint: a count must be at least 1" in text


def test_a_misnamed_settings_file_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text("http:\n  port: 8080\n", encoding="utf-8")
    loaded = load(tmp_path)
    assert loaded.http.port == 9926
    assert loaded.warnings == (
        "config.yml is not read: kiln reads config.yaml; rename it to use its settings",
    )
    write(tmp_path, "")
    assert load(tmp_path).warnings == ()
