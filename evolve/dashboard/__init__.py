"""`evolve dashboard`: a read-only FastAPI web view of the store.

Pages: runs (``/``), a run (``/runs/ID``: best-so-far curves, every candidate (low-fidelity
results drawn apart), parallel coordinates over the genome, parameter importance, a Pareto
front of two objectives for a run with several tasks (``?x=TASK&y=TASK``), per-task table,
worker timeline, live while the run goes), a candidate (``/candidates/ID``: recipe heatmap,
per-sample results, lineage) and a comparison (``/compare?a=ID&b=ID``); the same data as JSON under ``/api/``.

Security: it binds 127.0.0.1 by default; on any other host it refuses to start without a
token (``--token`` or ``$EVOLVE_DASHBOARD_TOKEN``), which every request must then carry
(``?token=``, once per browser session: it is kept in a cookie; or ``Authorization: Bearer``).
The store is opened read-only and the app only answers GET and HEAD.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

from search_spaces.errors import UserError

TOKEN_ENV = "EVOLVE_DASHBOARD_TOKEN"
COOKIE = "evolve_dashboard_token"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def plotly_js() -> Path:
    """The plotly.min.js bundled with the installed python ``plotly`` package."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise UserError(f"{path}: missing; reinstall the plotly package")
    return path


def create_app(store_url: str, token: str | None = None, poll_seconds: float = 2.0) -> Any:
    """The FastAPI app over a read-only store at ``store_url``; with ``token``, every request needs it."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    from evolve.dashboard import data, pages
    from evolve.store import NotFoundError, Store

    store = Store(store_url, read_only=True)
    views = data.ViewCache(store, ttl=poll_seconds)
    script = plotly_js()
    app = FastAPI(title="evolve dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response("read-only dashboard: only GET and HEAD\n", status_code=405)
        set_cookie = False
        if token is not None:
            given = request.query_params.get("token")
            auth = request.headers.get("authorization", "")
            candidates = [given, request.cookies.get(COOKIE), auth[7:] if auth.lower().startswith("bearer ") else None]
            if not any(c is not None and hmac.compare_digest(c.encode(), token.encode()) for c in candidates):
                return Response("unauthorized: pass ?token=... or an Authorization: Bearer header\n", status_code=401)
            set_cookie = given is not None
        response = await call_next(request)
        if set_cookie:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; script-src 'self' 'unsafe-inline' "
                                                       "'unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:")
        return response

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=404)
        return HTMLResponse(pages.error_page(404, str(exc)), status_code=404)

    @app.exception_handler(UserError)
    async def bad_request(request: Request, exc: UserError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=400)
        return HTMLResponse(pages.error_page(400, str(exc)), status_code=400)

    @app.get("/static/plotly.min.js")
    def plotly_asset() -> FileResponse:
        return FileResponse(script, media_type="application/javascript")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/app.js")
    def app_asset() -> Response:
        return Response(pages.APP_JS, media_type="application/javascript")

    @app.get("/", response_class=HTMLResponse)
    def runs_page() -> str:
        return pages.runs_page(views.runs(), poll_seconds)

    def run_view(run_id: str, x: str | None, y: str | None) -> dict[str, Any]:
        return {**views.run_view(run_id), "pareto": views.front(run_id, x, y)}

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(run_id: str, x: str | None = None, y: str | None = None) -> str:
        return pages.run_page(run_view(run_id, x, y), poll_seconds)

    @app.get("/candidates/{candidate_id}", response_class=HTMLResponse)
    def candidate_page(candidate_id: str) -> str:
        return pages.candidate_page(data.candidate_view(store, candidate_id))

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(a: str, b: str) -> str:
        return pages.compare_page(data.compare_data(store, a, b))

    @app.get("/api/runs")
    def api_runs() -> list[dict[str, Any]]:
        return views.runs()

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str, x: str | None = None, y: str | None = None) -> dict[str, Any]:
        return run_view(run_id, x, y)

    @app.get("/api/candidates/{candidate_id}")
    def api_candidate(candidate_id: str) -> dict[str, Any]:
        return data.candidate_view(store, candidate_id)

    @app.get("/api/compare")
    def api_compare(a: str, b: str) -> dict[str, Any]:
        return data.compare_data(store, a, b)

    return app


def resolve_token(host: str, token: str | None) -> str | None:
    """The token to require: ``token`` or $EVOLVE_DASHBOARD_TOKEN; refuses a non-local host without one."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if host not in LOCAL_HOSTS and not token:
        raise UserError(f"--host {host}: serving beyond this machine needs a token "
                        f"(--token or ${TOKEN_ENV}); refusing to start without one")
    if token is not None and len(token) < 8:
        raise UserError("--token: use at least 8 characters")
    return token


def serve(store_url: str, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          poll_seconds: float = 2.0) -> None:
    """Run the dashboard until interrupted."""
    import uvicorn

    token = resolve_token(host, token)
    app = create_app(store_url, token, poll_seconds)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
