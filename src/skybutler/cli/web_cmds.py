"""``skybutler serve``: the read-only operations web view of a repository."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError, MissingDependencyError

__all__ = ["serve"]

_WEB_MODULES = ("starlette", "jinja2", "uvicorn", "markupsafe")


@click.command("serve")
@click.argument("repo", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback (127.0.0.1, ::1, localhost) needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port to listen on.")
@click.option("--token", default=None, metavar="SECRET",
              help="Require this secret on every request (visible to other users in the process list: "
                   "prefer --token-file on a shared machine).")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Read the secret from the first line of this file instead of --token.")
def serve(repo: str, host: str, port: int, token: str | None, token_file: str | None) -> None:
    """Serve a read-only web view of the repository REPO until Ctrl-C.

    \b
    Pages (open http://HOST:PORT/ in a browser):
      /                     campaigns and submissions: a progress bar per task
                            (succeeded / running / failed / pending), wall time,
                            attempt; refreshes itself while a submission runs
      /submissions/NAME     jobs with states and times (filter by state, task),
                            failures with reasons and exit codes, QC matches by
                            severity, executions and wall time per step, files
                            of a dataset type with their paths
      /graph/NAME           the submission's quantum graph as a picture
      /datasets             a query box (the --where language of `skybutler
                            query datasets`), results with file paths and sizes
      /datasets/ID          data id, file, checksum, the execution that made it
                            (host, times, CPU, memory, software, config hash),
                            its lineage as a picture, W3C PROV download

    The repository is opened read-only: nothing on these pages changes it. By default
    the view listens on 127.0.0.1 only (reach it from elsewhere through `ssh -L
    8765:127.0.0.1:8765 HOST`). To listen on another address, give a token; clients
    then send `Authorization: Bearer SECRET`, and a browser opens any page once as
    http://HOST:PORT/?token=SECRET (the token is kept in a cookie and dropped from the
    address). Needs the web extra: pip install 'skybutler[web]'.
    """
    if token is not None and token_file is not None:
        raise ConfigError("Give --token or --token-file, not both")
    if token_file is not None:
        lines = Path(token_file).read_text(encoding="utf-8").splitlines()
        token = lines[0].strip() if lines else ""
    try:
        from ..web.server import serve as serve_web
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in _WEB_MODULES:
            raise MissingDependencyError(f"skybutler serve needs {exc.name}: pip install 'skybutler[web]'") from None
        raise
    serve_web(repo, host=host, port=port, token=token)
