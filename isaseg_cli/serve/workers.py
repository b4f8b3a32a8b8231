"""``isaseg serve --workers N``: uvicorn's process supervisor, each worker with its own model.

The parent binds the socket and supervises; every worker (a fresh, spawned process) reads the
server's description from ``$ISASEG_SERVE_WORKER`` (set only for the children; the API key, if
any, travels in the environment, never in argv), loads the model, warms it up and serves on
the shared socket, so the kernel spreads connections over the workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from isaseg_cli.serve.app import build_app
from isaseg_cli.serve.model import load_segmenter
from isaseg_cli.serve.settings import ServeSettings

CONFIG_ENV = "ISASEG_SERVE_WORKER"


def create_app() -> FastAPI:
    """The app of one worker process (uvicorn calls it as a factory)."""
    spec = json.loads(os.environ[CONFIG_ENV])
    segmenter = load_segmenter(**spec["model"])
    return build_app(segmenter, ServeSettings(**spec["settings"]))


def run_workers(
    model: dict[str, Any],
    settings: ServeSettings,
    *,
    host: str,
    port: int,
    workers: int,
    on_started: Callable[[str], None] | None = None,
    graceful_timeout_s: int = 30,
) -> None:
    """Serves with ``workers`` processes until SIGINT/SIGTERM, then lets each finish its
    requests in flight. ``model`` holds ``load_segmenter``'s arguments (JSON-serialisable)."""
    os.environ[CONFIG_ENV] = json.dumps({"model": model, "settings": dataclasses.asdict(settings)})
    try:
        config = uvicorn.Config(
            f"{__name__}:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=graceful_timeout_s,
        )
        sock = config.bind_socket()
        if on_started is not None:
            bound_host, bound_port = sock.getsockname()[:2]
            on_started(f"http://{bound_host}:{bound_port}")
        Multiprocess(config, sockets=[sock]).run()
    finally:
        os.environ.pop(CONFIG_ENV, None)
