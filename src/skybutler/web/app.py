"""The read-only web view: a Starlette application over the same library calls as the command line.

Pages (all ``GET``; anything else is answered 405):

- ``/``: campaigns and submissions, a progress bar per task, refreshed by short polling;
- ``/submissions/NAME``: jobs (filter by state and task), failures, QC, the DMTN-059 answers;
- ``/graph/NAME``: the submission's quantum graph as a picture;
- ``/datasets``: a query box (the ``where`` language), results with files and sizes, paged;
- ``/datasets/ID``: a dataset, the execution that made it, its lineage; ``/datasets/ID/prov``
  downloads its W3C PROV document.

The butler is opened once, read-only (``writeable=False``: the database itself refuses
writes), and shared by every request: it keeps no state between calls.

With a token, every request must carry it: ``Authorization: Bearer TOKEN``, or the
cookie set when a browser first opens a page with ``?token=TOKEN`` (it is then
redirected to the same page without it, so the token does not stay in the address bar
or in the history).
"""

from __future__ import annotations

import hmac
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..butler import Butler
from ..errors import BatchError, DatasetNotFoundError, SkyButlerError
from ..provenance import export_provenance
from . import views
from ._format import FILTERS, dataset_url, submission_url

__all__ = ["COOKIE", "make_app"]

COOKIE = "skybutler_token"
"""The HttpOnly cookie a browser keeps the token in after its first ``?token=`` load."""

POLL_SECONDS = 2.0
"""How often a live page asks for its fragment again, by default."""

_HERE = Path(__file__).parent

# The pages run no inline script; styles are allowed inline for the widths of progress bars
# and the SVG pictures' own style attributes.
_SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Gate:
    """ASGI middleware: the token on every request (when one is set) and the security headers on every answer."""

    def __init__(self, app: Any, token: str | None):
        self.app = app
        self.token = token

    def _matches(self, given: str | None) -> bool:
        assert self.token is not None
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        if self.token is None:
            await self.app(scope, receive, send_with_headers)
            return
        request = Request(scope)
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        signed_in = self._matches(bearer) or self._matches(request.cookies.get(COOKIE))
        query_token = request.query_params.get("token")
        if signed_in and query_token is None:
            await self.app(scope, receive, send_with_headers)
            return
        response: Response
        if self._matches(query_token) or (signed_in and query_token is not None):
            # A link holding the token: keep it in a cookie and drop it from the address, so it
            # stays out of the history, of bookmarks and of what is shown on a shared screen.
            query = urllib.parse.urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
            if self._matches(query_token):
                response.set_cookie(COOKIE, self.token or "", httponly=True, samesite="strict", path="/",
                                    secure=request.url.scheme == "https")
        else:
            response = PlainTextResponse(
                "This skybutler web view needs its token: send 'Authorization: Bearer TOKEN', or open a page "
                "once with ?token=TOKEN in the address.\n", status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="skybutler"'})
        await response(scope, receive, send_with_headers)


def _templates(poll_seconds: float) -> Jinja2Templates:
    # Autoescape on for every template, whatever its name: each value a page shows is text.
    env = jinja2.Environment(loader=jinja2.PackageLoader("skybutler.web", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(FILTERS)
    env.globals.update(dataset_url=dataset_url, submission_url=submission_url, poll_seconds=poll_seconds,
                       quote=lambda s: urllib.parse.quote(str(s), safe=""))
    return Jinja2Templates(env=env)


def _svg() -> Any:
    """The picture module (``svg.py``) or None while it is not there; looked up per call, it costs a dict lookup."""
    import importlib

    try:
        return importlib.import_module(f"{__package__}.svg")
    except ImportError:
        return None


def _int(request: Request, key: str, default: int = 1) -> int:
    try:
        return int(request.query_params.get(key, default))
    except ValueError:
        return default


def _opt(request: Request, key: str) -> str | None:
    value = request.query_params.get(key, "").strip()
    return value or None


def make_app(repo: str | Path, *, token: str | None = None, poll_seconds: float = POLL_SECONDS) -> Starlette:
    """The web view of the repository ``repo``, as an ASGI application (serve it with uvicorn).

    Parameters
    ----------
    repo
        The repository directory (holding ``skybutler.yaml``); its registry may be SQLite
        or PostgreSQL. Opened once, read-only.
    token
        If given, every request must carry it (see the module's docstring); `serve`
        requires one for any address but loopback.
    poll_seconds
        How often a page showing a running submission asks for fresh figures.

    Examples
    --------
    >>> from starlette.testclient import TestClient               # doctest: +SKIP
    >>> client = TestClient(make_app("/data/repo"))               # doctest: +SKIP
    >>> client.get("/datasets", params={"dataset_type": "calexp", "where": "visit = 903334"})  # doctest: +SKIP
    """
    butler = Butler(repo, writeable=False)
    templates = _templates(poll_seconds)

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"repo": str(repo), **context}, status_code=status_code)

    # Endpoints are plain functions: Starlette runs them in its thread pool, so a slow
    # query does not stop other pages.
    def submissions_index(request: Request) -> Response:
        return page(request, "submissions.html", submissions=views.submissions(butler))

    def submissions_fragment(request: Request) -> Response:
        rows = views.submissions(butler)
        return page(request, "_submissions_table.html", submissions=rows,
                    live=any(s.live for s in rows))

    def submission(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            data = views.submission_page(
                butler, name, state=_opt(request, "state"), task=_opt(request, "task"),
                severity=_opt(request, "severity"), dataset_type=_opt(request, "dataset_type"),
                page=_int(request, "page"))
        except BatchError as exc:
            raise HTTPException(404, str(exc)) from None
        return page(request, "submission.html", data=data, s=data.summary)

    def submission_fragment(request: Request) -> Response:
        try:
            summary = views.submission_summary(butler, request.path_params["name"])
        except BatchError as exc:
            raise HTTPException(404, str(exc)) from None
        return page(request, "_progress.html", s=summary, live=summary.live)

    def graph(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            summary, path = views.submission_for_graph(butler, name)
        except BatchError as exc:
            raise HTTPException(404, str(exc)) from None
        from ..pipeline.graph import QuantumGraph

        header = QuantumGraph.read_header(path)
        svg = _svg()
        picture = Markup(svg.graph_svg(path)) if svg is not None else None  # noqa: S704 - svg.py escapes
        return page(request, "graph.html", s=summary, header=header, picture=picture, path=str(path))

    def datasets(request: Request) -> Response:
        colls = [c.strip() for v in request.query_params.getlist("collections") for c in v.split(",")]
        data = views.datasets_page(butler, _opt(request, "dataset_type"), collections=colls,
                                   where=request.query_params.get("where", ""), page=_int(request, "page"))
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
        return page(request, "datasets.html", data=data, query=urllib.parse.urlencode(query),
                    status_code=400 if data.error else 200)

    def dataset(request: Request) -> Response:
        try:
            data = views.dataset_page(butler, request.path_params["dataset_id"])
        except DatasetNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        svg = _svg()
        picture, picture_error = None, None
        if svg is not None:
            try:
                picture = Markup(svg.lineage_svg(  # noqa: S704 - svg.py escapes every value
                    butler, data.id, depth=3, href=dataset_url))
            except SkyButlerError as exc:
                picture_error = str(exc)
        return page(request, "dataset.html", d=data, picture=picture, picture_error=picture_error)

    def provenance_download(request: Request) -> Response:
        fmt = request.query_params.get("format", "json")
        direction = request.query_params.get("direction", "up")
        if fmt not in ("json", "provn") or direction not in ("up", "down", "both", "none"):
            raise HTTPException(400, "format is json or provn; direction is up, down, both or none")
        did = request.path_params["dataset_id"]
        try:
            text = export_provenance(butler, did, format=fmt, direction=direction)
        except DatasetNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        media = "application/json" if fmt == "json" else "text/provenance-notation"
        ext = "json" if fmt == "json" else "provn"
        return Response(text, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="prov-{did}.{ext}"'})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return page(request, "error.html", status_code=exc.status_code, title=f"{exc.status_code}",
                    message=exc.detail)

    async def user_error(request: Request, exc: Exception) -> Response:
        # A user's mistake the library explains (a bad id, an unknown name): its message, no traceback.
        return page(request, "error.html", status_code=400, title="Cannot show this", message=str(exc))

    routes = [
        Route("/", submissions_index),
        Route("/fragments/submissions", submissions_fragment),
        Route("/fragments/submission/{name:path}", submission_fragment),
        Route("/submissions/{name:path}", submission),
        Route("/graph/{name:path}", graph),
        Route("/datasets", datasets),
        Route("/datasets/{dataset_id}/prov", provenance_download),
        Route("/datasets/{dataset_id}", dataset),
        Mount("/static", StaticFiles(packages=[("skybutler.web", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, SkyButlerError: user_error})
    app.state.butler = butler
    app.add_middleware(_Gate, token=token)
    return app
