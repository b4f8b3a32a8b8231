"""The FastAPI app factory and the uvicorn runner of ``isaseg serve``."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.errors import IsasegError
from isaseg_cli.serve.api_error import ApiError
from isaseg_cli.serve.routes import error_response, router
from isaseg_cli.serve.service import SegmentService
from isaseg_cli.serve.settings import ServeSettings


def build_app(segmenter: Segmenter, settings: ServeSettings) -> FastAPI:
    """The HTTP app around ``segmenter``; its batcher starts and stops with the app's lifespan."""
    service = SegmentService(segmenter, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="isaseg", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    app.include_router(router)

    async def refused(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        where = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in errors
        )
        return error_response(ApiError(422, f"invalid request: {where or exc}"))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return error_response(ApiError(exc.status_code, str(exc.detail), dict(exc.headers or {})))

    app.add_exception_handler(ApiError, refused)
    app.add_exception_handler(IsasegError, refused)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, refused)
    app.add_middleware(_CountingMiddleware, service=service)
    return app


class _CountingMiddleware:
    """Counts requests by path and answers >= 400 by code (pure ASGI, lighter than an HTTP
    middleware: it only looks at the response-start message)."""

    def __init__(self, app: Any, service: SegmentService) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.service.metrics
        path = scope["path"]
        metrics.requests.labels(path if path.startswith(("/v1/", "/metrics")) else "other").inc()

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                metrics.errors.labels(str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            metrics.errors.labels("500").inc()  # answered by Starlette's outermost middleware
            raise


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising SIGINT/SIGTERM after its graceful shutdown (so a
    stopped server exits 0), and telling ``on_started`` the address it bound (port 0 works)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[str], None] | None) -> None:
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.on_started is not None and self.servers and not self.should_exit:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.on_started(f"http://{host}:{port}")

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_server(
    app: FastAPI,
    *,
    host: str,
    port: int,
    on_started: Callable[[str], None] | None = None,
    graceful_timeout_s: int = 30,
) -> None:
    """Serves ``app`` until SIGINT/SIGTERM; then stops accepting, answers the requests in
    flight (for up to ``graceful_timeout_s``) and returns."""
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=graceful_timeout_s,
    )
    _Server(config, on_started).run()


@contextlib.contextmanager
def serving_in_thread(app: FastAPI, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Runs ``app`` on a free port in a background thread (tests, benchmarks); yields its URL
    once it answers, and stops it gracefully on exit."""
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=0, log_level="warning", access_log=False)  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, name="isaseg-serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server thread stopped before it started")
        time.sleep(0.01)
    bound_host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"http://{bound_host}:{port}"
    finally:
        server.should_exit = True
        thread.join()
