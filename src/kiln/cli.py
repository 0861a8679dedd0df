"""The ``kiln`` command: a thin typer layer over the library."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvloop
from rich.console import Console
from rich.text import Text

from kiln.app import load_app
from kiln.config import load_config
from kiln.errors import KilnError
from kiln.serve import banner, serve

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="kiln: schema, storage, REST and real-time in one process.",
)
console = Console(stderr=True, highlight=False)


@cli.callback()
def _root() -> None:
    """kiln: schema, storage, REST and real-time in one process."""


@cli.command()
def run(
    app_dir: Annotated[Path, typer.Argument(help="The application folder (schema.graphql, ...).")],
    host: Annotated[str | None, typer.Option(help="Address to listen on (http.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (http.port).")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Data folder (storage.path; default APP_DIR/.kiln).")
    ] = None,
    access_log: Annotated[
        bool | None, typer.Option("--access-log", help="Log one line per request.")
    ] = None,
) -> None:
    """Serve the application in APP_DIR until interrupted."""
    try:
        config = load_config(
            app_dir,
            env=os.environ,
            overrides={
                "http.host": host,
                "http.port": port,
                "storage.path": str(data.resolve()) if data is not None else None,
                "http.accessLog": access_log,
            },
        )
        logging.basicConfig(
            level=config.logging.level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        app = load_app(app_dir, config)
    except KilnError as error:
        console.print(Text("error: ", style="bold red") + Text(str(error)), soft_wrap=True)
        raise typer.Exit(2) from None
    print(banner(app), flush=True)
    uvloop.run(serve(app))
    _exit_now()


def _exit_now() -> None:
    """Leave at once, once every write is committed and the databases are closed.

    granian's embedded server can still have Rust threads winding down when the
    loop ends, and one that panics during interpreter teardown aborts the process
    (SIGABRT). Nothing is left to clean up by then, so skip the teardown.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    """Entry point of the ``kiln`` console script."""
    cli(prog_name="kiln")


if __name__ == "__main__":
    sys.exit(main())
