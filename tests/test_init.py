"""Tests for ``kiln init`` (:mod:`kiln.scaffold`): the three files, the config template made
from :data:`~kiln.config.SETTINGS`, the refusal to touch a folder that holds anything, and a
generated app that starts and serves its example table.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from conftest import free_port
from kiln.cli import cli
from kiln.config import SETTINGS, load_config
from kiln.scaffold import APP_FILES, config_template
from kiln.schema import load_schema

runner = CliRunner()


def uncommented(text: str) -> str:
    """``text`` with the first ``#`` of every line deleted."""
    return "\n".join(line.removeprefix("#") for line in text.splitlines()) + "\n"


def test_init_writes_the_three_files_and_says_how_to_run(tmp_path: Path) -> None:
    app = tmp_path / "myapp"
    result = runner.invoke(cli, ["init", str(app)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in app.iterdir()) == sorted(APP_FILES)
    assert f"kiln run {app}" in result.output

    schema = load_schema(app / "schema.graphql")
    assert [table.name for table in schema.exported()] == ["Dog"]
    resources = (app / "resources.py").read_text()
    assert "class DogProfile(tables.Dog)" in resources
    assert "(Resource):" in resources
    assert "kiln imports this file at start-up" in resources
    compile(resources, "resources.py", "exec")  # a valid module as written
    config = load_config(app, env={})  # every setting is commented out, so all are defaults
    assert all(config.source(setting.key) == "default" for setting in SETTINGS)


def test_config_template_lists_every_setting_at_its_default(tmp_path: Path) -> None:
    template = config_template()
    assert not yaml.safe_load(template), "a setting is not commented out"
    for written in ("maxBodySize: 10MiB", "heartbeat: 15s", "tokenTimeout: 1d"):
        assert re.search(rf"^#\s+{written}$", template, re.M), written  # as the README says
    for setting in SETTINGS:
        name = setting.key.rsplit(".", 1)[-1]
        assert re.search(rf"^#\s+{re.escape(name)}: ", template, re.M), setting.key
        assert setting.help in template, setting.key

    (tmp_path / "config.yaml").write_text(uncommented(template))
    loaded = yaml.safe_load((tmp_path / "config.yaml").read_text())
    top_level = {setting.key for setting in SETTINGS if "." not in setting.key}
    flat = set(top_level & set(loaded))
    for section, keys in loaded.items():
        if section not in top_level:
            flat.update(f"{section}.{key}" for key in keys)
    assert flat == {setting.key for setting in SETTINGS}

    config = load_config(tmp_path, env={})
    defaults = load_config(tmp_path / "empty", env={})
    for setting in SETTINGS:
        assert config.source(setting.key) == "config.yaml", setting.key
        if setting.key != "storage.path":  # resolved against each app folder
            assert config.value(setting.key) == defaults.value(setting.key), setting.key
    assert config.storage.path == tmp_path.resolve() / ".kiln"


@pytest.mark.parametrize("existing", ["schema.graphql", "config.yaml", "resources.py", "notes.txt"])
def test_init_refuses_a_folder_that_holds_anything(tmp_path: Path, existing: str) -> None:
    app = tmp_path / "myapp"
    app.mkdir()
    (app / existing).write_text("mine\n")
    result = runner.invoke(cli, ["init", str(app)])
    assert result.exit_code != 0
    assert result.output.startswith(f"error: {app}: the folder is not empty"), result.output
    assert existing in result.output
    assert "hint:" in result.output
    assert [p.name for p in app.iterdir()] == [existing]
    assert (app / existing).read_text() == "mine\n"


def test_init_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "myapp"
    target.write_text("x")
    result = runner.invoke(cli, ["init", str(target)])
    assert result.exit_code != 0
    assert "not a folder" in result.output
    assert target.read_text() == "x"


def test_init_accepts_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    assert runner.invoke(cli, ["init", str(tmp_path / "myapp")]).exit_code == 0


def test_the_generated_app_runs_and_serves_its_table(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    done = subprocess.run(
        [sys.executable, "-m", "kiln", "init", "myapp"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "kiln run myapp" in done.stdout
    assert "kiln user add admin --role super_user --app myapp" in done.stdout
    add = ["add", "admin", "--role", "super_user", "--app", "myapp", "--password-stdin"]
    added = subprocess.run(
        [sys.executable, "-m", "kiln", "user", *add],
        cwd=tmp_path,
        input="a-long-password\n",
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert added.returncode == 0, added.stderr

    port = free_port()
    log = tmp_path / "out.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kiln", "run", "myapp", "--port", str(port)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                httpx.get(f"{url}/_health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert httpx.get(f"{url}/Dog/").status_code == 401
        with httpx.Client(base_url=url, auth=("admin", "a-long-password"), timeout=10) as http:
            dog = {"name": "Rex", "breed": "lab", "birthday": "2020-05-01T00:00:00Z"}
            assert http.put("/Dog/1", json=dog).status_code == 204
            assert http.get("/Dog/1").json() == {**dog, "id": 1}
            assert http.get("/Dog/").json() == [{**dog, "id": 1}]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    assert (tmp_path / "myapp" / ".kiln").is_dir()
