"""The FastAPI application: the JSON API, the page, errors as HTTP statuses, and access rules."""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from llama_index_vlm.errors import (
    ContextWindowExceededError,
    EmptyInputError,
    InvalidPageError,
    UnreadableDocumentError,
    UnsupportedFilterError,
    UsageError,
    VLMError,
)
from llama_index_vlm.server.auth import COOKIE_NAME, AccessMiddleware, TokenCheck
from llama_index_vlm.server.gates import ServerBusyError
from llama_index_vlm.server.routes import router, upload_router
from llama_index_vlm.server.state import (
    Models,
    NoAnsweringModelError,
    NotReadyError,
    ServerLimits,
    ServerState,
    UnknownItemError,
)
from llama_index_vlm.server.uploads import UnsupportedUploadError

STATIC_DIR = Path(__file__).parent / "static"

_DESCRIPTION = """\
Ask your documents and see the pages: ColPali retrieval over a LanceDB page store, answers
from a local vision-language model, uploads indexed in the background.

With a token (`llama-index-vlm serve --token`), every route needs `Authorization: Bearer
<token>` (or the page's session cookie)."""

#: HTTP status of each error a request can cause; the body is ``{"detail": message}``.
_STATUS: list[tuple[type[BaseException], int]] = [
    (UnknownItemError, 404),
    (UnsupportedUploadError, 415),
    (NoAnsweringModelError, 501),
    (NotReadyError, 503),
    (ServerBusyError, 503),
    (UsageError, 400),
    (EmptyInputError, 400),
    (UnsupportedFilterError, 400),
    (ContextWindowExceededError, 400),
    (InvalidPageError, 400),
    (UnreadableDocumentError, 400),
    (VLMError, 500),
]
_JSON_LIMIT = 1024 * 1024


def create_app(
    store: Any,
    encoder: Any | None = None,
    vlm: Any | None = None,
    *,
    load_models: Callable[[], Models] | None = None,
    token: str | None = None,
    limits: ServerLimits | None = None,
    upload_dir: str | os.PathLike[str] | None = None,
    allowed_hosts: Sequence[str] | None = None,
    search_device: str | None = None,
    search_processes: int | None = None,
) -> FastAPI:
    """The server's ASGI app over a page store: run it with uvicorn, or ``llama-index-vlm serve``.

    Args:
        store: the :class:`~llama_index_vlm.store.LanceDBPageStore` to serve.
        encoder: the :class:`~llama_index_vlm.encoder.ColPaliEncoder` that built it, loaded.
        vlm: a :class:`~llama_index_vlm.vlm.HuggingFaceVLM` for ``/ask`` (None: search only).
        load_models: instead of ``encoder`` and ``vlm``, a function returning :class:`Models`,
            run in a background thread when the app starts; ``GET /health`` answers 503
            ``loading`` until it returns, and the other API routes 503.
        token: protect every route with this bearer token (see :mod:`~llama_index_vlm.server.auth`).
        limits: upload size, files and pages; generation slots and queue (:class:`ServerLimits`).
        upload_dir: where uploaded files are kept; default ``<store>/uploads`` for a local
            store, a temporary folder otherwise.
        allowed_hosts: accepted ``Host`` headers (e.g. ``["127.0.0.1", "localhost"]``): on a
            loopback address this stops DNS-rebinding pages from reaching the server.
        search_device: a torch device (``"cuda"``) to keep every page's vectors on and search
            them there exactly (``ColPaliRetriever``'s ``search_device``); None: the CPU.
        search_processes: run fast searches in this many worker processes
            (``ColPaliRetriever``'s ``search_processes``), for concurrent requests on several
            cores; None: in the server's process.

    Raises:
        UnsupportedDeviceError: ``search_device`` names a device torch cannot use here.

    Example::

        import uvicorn
        from llama_index_vlm.server import create_app

        app = create_app(store, encoder, vlm)
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    if (encoder is None) == (load_models is None):
        raise TypeError("give create_app a loaded encoder= or a load_models= function, not both")
    if load_models is None:
        models = Models(encoder=encoder, vlm=vlm)
        load_models = lambda: models  # noqa: E731 - loaded already
    state = ServerState(
        store,
        load_models,
        limits or ServerLimits(),
        upload_dir if upload_dir is not None else default_upload_dir(store),
        auth=token is not None,
        search_device=search_device,
        search_processes=search_processes,
    )
    if encoder is not None:
        state.load()
        if state.load_error is not None:
            raise state.load_error

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state.status == "loading":
            state.start_loading()
        yield
        state.shutdown()

    from llama_index_vlm import __version__

    app = FastAPI(
        title="llama-index-vlm",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the machines may be offline
        redoc_url=None,
        max_body_size=_JSON_LIMIT,
    )
    app.state.server = state
    _add_error_statuses(app)
    app.include_router(router)
    app.include_router(upload_router(state.limits))
    _add_page_routes(app, token)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(AccessMiddleware, token=token)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return app


def default_upload_dir(store: Any) -> Path:
    """``<store>/uploads`` for a local store; a new temporary folder for a remote one."""
    uri = str(store.uri)
    if "://" in uri:
        return Path(tempfile.mkdtemp(prefix="llama-index-vlm-uploads-"))
    return Path(uri) / "uploads"


def _add_error_statuses(app: FastAPI) -> None:
    def handler(status: int):
        async def respond(request: Request, error: Exception) -> JSONResponse:
            headers = {"Retry-After": "2"} if status == 503 else None
            return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)

        return respond

    for error_class, status in _STATUS:
        app.add_exception_handler(error_class, handler(status))


def _add_page_routes(app: FastAPI, token: str | None) -> None:
    check = TokenCheck(token) if token else None
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    def logged_in(response: Response) -> Response:
        response.set_cookie(
            COOKIE_NAME, check.cookie_value, httponly=True, samesite="strict", path="/"
        )
        return response

    @app.get("/", include_in_schema=False)
    async def index(request: Request, token: str | None = None) -> Response:
        if check is not None and token is not None:
            if check.token_matches(token):  # drop the token from the address bar
                return logged_in(RedirectResponse("/", status_code=303))
            return _login_page("That token is not this server's.")
        if check is not None and not check.allows(request.scope):
            return _login_page()
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        given = form.get("token")
        if check is None:
            return RedirectResponse("/", status_code=303)
        if isinstance(given, str) and check.token_matches(given):
            return logged_in(RedirectResponse("/", status_code=303))
        return _login_page("That token is not this server's.")


def _login_page(message: str = "") -> HTMLResponse:
    note = f'<p class="error">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llama-index-vlm: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input{{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.5rem 0}}
button{{font:inherit;padding:.4rem 1rem}}.error{{color:#b00020}}</style></head>
<body><h1>llama-index-vlm</h1>
<p>This server needs its token. <code>llama-index-vlm serve</code> printed it, in a link you
can open instead.</p>{note}
<form method="post" action="/login"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<button type="submit">Log in</button></form></body></html>"""
    return HTMLResponse(body, status_code=401, headers={"Cache-Control": "no-store"})
