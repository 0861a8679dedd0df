"""More than one process serving HTTP on one port (``http.workers``).

One event loop answers HTTP in each process, so a server uses more cores by
running more processes. ``kiln run`` loads the app in its own process (evolving
the schema and adding the first user there, once), which becomes worker 1, and
then starts workers 2..N with ``python -m kiln.workers``. Each loads the same app
over the same databases and serves HTTP on the same port: granian listens with
``SO_REUSEPORT``, so the kernel spreads the connections among them. LMDB lets
every process read and write the one environment; versions stay in commit order
because each writer starts from the log's newest (:mod:`kiln.storage.writer`).
Worker 1 alone runs the MQTT broker and prunes the audit log. The change buses
of the workers are linked (:mod:`kiln.realtime.peers`), so a subscriber on any
worker hears of every write and message.

Stopping: SIGINT or SIGTERM to worker 1 stops them all, each committing its
writes. A worker that ends unexpectedly stops worker 1, and with it the rest
(``kiln run`` then exits 1), so a supervisor restarts a whole server rather than
run one short of its workers. A worker that loses worker 1 (killed) stops itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from kiln.config import Config
from kiln.config.settings import env_name
from kiln.realtime.peers import Peers

log = logging.getLogger("kiln.workers")

STOP_TIMEOUT = 30.0
"""Seconds worker 1 waits for another worker to stop before it kills it."""


def schema_digest(app_dir: Path) -> str:
    """A digest of the app's schema: every worker must serve the one worker 1 evolved to."""
    return hashlib.sha256((app_dir / "schema.graphql").read_bytes()).hexdigest()


def _settings_env(config: Config) -> dict[str, str]:
    """The ``KILN_*`` variables that give a worker the settings worker 1 was started with
    (those the command line may set; the rest come from the same file and variables)."""
    values = {
        "http.host": config.http.host,
        "http.port": str(config.http.port),
        "http.accessLog": "true" if config.http.access_log else "false",
        "storage.path": str(config.storage.path),
    }
    return {env_name(key): value for key, value in values.items()}


class Crew:
    """Workers 2..N, started and watched by worker 1.

    Args:
        app_dir: the application folder.
        config: worker 1's settings; ``http.workers`` says how many processes serve.
    """

    def __init__(self, app_dir: Path, config: Config):
        self.stopping = False
        self.processes: list[subprocess.Popen[bytes]] = []
        sockets: list[socket.socket] = []
        env = {**os.environ, **_settings_env(config)}
        digest = schema_digest(app_dir)
        try:
            for number in range(2, config.http.workers + 1):
                ours, theirs = socket.socketpair()
                sockets.append(ours)
                command = [sys.executable, "-m", "kiln.workers", str(app_dir), str(number)]
                command += [str(theirs.fileno()), digest]
                with theirs:
                    self.processes.append(
                        subprocess.Popen(command, pass_fds=(theirs.fileno(),), env=env)
                    )
        except BaseException:
            for sock in sockets:
                sock.close()
            self.terminate()
            raise
        self.peers = Peers(sockets, hub=True)

    def describe(self, link: int) -> str:
        """Worker ``link + 2`` with its process id and, if it ended, its exit code."""
        process = self.processes[link]
        code = process.poll()
        ended = "" if code is None else f", exit code {code}"
        return f"worker {link + 2} (pid {process.pid}{ended})"

    def terminate(self) -> None:
        """Ask every worker to stop (SIGTERM): each commits its writes and leaves."""
        self.stopping = True
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    async def wait(self) -> None:
        """Wait for every worker to end; one still running after :data:`STOP_TIMEOUT` is
        killed."""
        loop = asyncio.get_running_loop()
        for process in self.processes:
            try:
                await asyncio.wait_for(
                    loop.run_in_executor(None, process.wait), timeout=STOP_TIMEOUT
                )
            except TimeoutError:
                log.error("worker pid %d did not stop in %ss; killed", process.pid, STOP_TIMEOUT)
                process.kill()
        self.peers.close()


def main(argv: list[str]) -> int:
    """A worker's process: ``python -m kiln.workers APP_DIR NUMBER FD DIGEST``.

    Started only by worker 1 (:class:`Crew`); its settings come from the environment
    worker 1 gave it, and ``FD`` is its end of the link to worker 1.
    """
    import uvloop

    from kiln.app import load_app
    from kiln.errors import KilnError
    from kiln.serve import exit_now, read_config, serve

    app_dir, number, fd, digest = Path(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    link = socket.socket(fileno=fd)
    config = read_config(app_dir, {})
    logging.basicConfig(
        level=config.logging.level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[worker {number}]: %(message)s",
    )
    if schema_digest(app_dir) != digest:
        log.error("schema.graphql changed while the workers started; restart kiln")
        return 2
    try:
        app = load_app(app_dir, config)  # the steady state: worker 1 evolved the schema
    except KilnError as error:
        log.error("%s", error)
        return 2
    app.worker = number
    clean = uvloop.run(serve(app, link=link))
    exit_now(0 if clean else 1)  # as kiln run leaves (see exit_now)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
