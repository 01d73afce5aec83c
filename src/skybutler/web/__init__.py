"""The read-only operations web view (``skybutler serve REPO``): campaigns, jobs, QC, datasets, provenance.

Needs the ``web`` extra (``pip install 'skybutler[web]'``: Starlette, Jinja2, uvicorn).
`make_app` builds the ASGI application; `serve` runs it with uvicorn on loopback, or
on another address with a token. The pages' figures come from `skybutler.web.views`,
which calls the same library functions as the command line.
"""

from .app import COOKIE, make_app
from .server import serve

__all__ = ["COOKIE", "make_app", "serve"]
