"""`isaseg serve`: the model behind an HTTP API with dynamic batching and limits."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._backend import check_exported_options, resolve_backend
from isaseg_cli.cli._options import (
    BackendOpt,
    CheckpointOpt,
    DeviceOpt,
    ModelArg,
    ModeOpt,
    MsFlipOpt,
    PrecisionOpt,
    TrustOpt,
    default_model,
)
from isaseg_cli.errors import InputError


def serve_cli(
    model: ModelArg = None,
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free).")] = 8000,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    backend: BackendOpt = "auto",
    mode: ModeOpt = None,
    ms_flip: MsFlipOpt = False,
    max_batch: Annotated[int, typer.Option(min=1, help="Images per forward pass at most.")] = 4,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long a batch's first image waits for others.")
    ] = 5.0,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Waiting requests at most; more get 503.")
    ] = 64,
    max_image_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body; larger get 413.")
    ] = 20 * 1024 * 1024,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Largest image (width x height, from its header).")
    ] = 4096 * 4096,
    timeout: Annotated[
        float, typer.Option(min=0.001, metavar="SECONDS", help="Per-request time limit (504).")
    ] = 60.0,
    api_key_env: Annotated[
        str | None,
        typer.Option(metavar="VAR", help="Require the API key held in this environment variable."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, metavar="N", help="Server processes, each with its own model and batcher."
        ),
    ] = 1,
) -> None:
    """Serve a model over HTTP: POST /v1/segment, GET /v1/health /v1/ready /v1/models /metrics."""
    from isaseg_cli.serve import require_serve_extra

    require_serve_extra()
    from isaseg_cli.serve.app import build_app, run_server
    from isaseg_cli.serve.model import load_segmenter
    from isaseg_cli.serve.settings import ServeSettings

    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise InputError(f"--api-key-env {api_key_env}: that environment variable is empty")
    settings = ServeSettings(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_image_bytes=max_image_bytes,
        max_pixels=max_pixels,
        timeout_s=timeout,
        api_key=api_key,
    )
    options: dict[str, Any] = {
        "device": device,
        "precision": precision,
        "mode": mode,
        "ms_flip": ms_flip,
    }
    name = model or (None if checkpoint else default_model())
    backend = resolve_backend(backend, checkpoint)
    if backend != "torch":
        check_exported_options(backend, name, checkpoint, options)
    where = {"name": name, "checkpoint": None if checkpoint is None else str(checkpoint)}
    where |= {"trust": trust_checkpoint, "backend": backend}
    # Loaded here even with --workers: a bad model fails once, with one message, and a zoo
    # file is downloaded once before the workers load their own copies.
    segmenter = load_segmenter(
        **where, on_stage=_render.stage_status, options={**options, "on_warning": _render.warn}
    )
    entry_name = segmenter.loaded.entry.name

    def started(url: str) -> None:
        _render.info(f"Serving {entry_name} on {url}")

    if workers > 1:
        from isaseg_cli.serve.workers import run_workers

        del segmenter
        spec = {**where, "options": options}
        run_workers(spec, settings, host=host, port=port, workers=workers, on_started=started)
    else:
        run_server(build_app(segmenter, settings), host=host, port=port, on_started=started)
    _render.info("Server stopped")
