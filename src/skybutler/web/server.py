"""Serving the web view with uvicorn: loopback by default, any other address only with a token."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ..errors import ConfigError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "check_bind", "is_loopback", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``) or ``localhost``."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        # A host name other than localhost may resolve anywhere: not loopback.
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen on a non-loopback address without a token.

    Raises
    ------
    ConfigError
        ``host`` is not loopback and ``token`` is empty, or ``token`` is only blanks.
    """
    if token is not None and not token.strip():
        raise ConfigError("The token is empty; give a secret of some length (e.g. `openssl rand -hex 16`)")
    if not is_loopback(host) and not token:
        raise ConfigError(f"Refusing to serve on {host!r} without a token: anyone who can reach that address "
                          f"would read the repository. Add --token SECRET (clients then send 'Authorization: "
                          f"Bearer SECRET' or open a page once with ?token=SECRET), or keep the default "
                          f"{DEFAULT_HOST}")


def serve(repo: str | Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
          log_level: str = "info") -> None:
    """Serve the web view of ``repo`` until interrupted (Ctrl-C).

    Raises
    ------
    ConfigError
        A non-loopback ``host`` without a ``token`` (see `check_bind`).
    RepositoryNotFoundError
        ``repo`` is not a repository.
    """
    check_bind(host, token)
    import uvicorn

    from .app import make_app

    app = make_app(repo, token=token)
    # uvicorn trusts X-Forwarded-* only from 127.0.0.1 (a TLS proxy on the same machine), by default.
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
