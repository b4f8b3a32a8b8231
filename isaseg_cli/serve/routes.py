"""The HTTP endpoints: segment, health, ready, models and metrics."""

from __future__ import annotations

import hmac
import time
from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from isaseg_cli.errors import IsasegError
from isaseg_cli.serve.api_error import ApiError
from isaseg_cli.serve.image_header import decode_image
from isaseg_cli.serve.output import encode_result
from isaseg_cli.serve.service import SegmentService
from isaseg_cli.zoo.classes import CITYSCAPES

router = APIRouter()
# Multipart framing around the file: boundaries and part headers are a few hundred bytes.
MULTIPART_OVERHEAD = 64 * 1024


def _service(request: Request) -> SegmentService:
    return request.app.state.service  # type: ignore[no-any-return]


def _check_key(request: Request, service: SegmentService) -> None:
    expected = service.settings.api_key
    if expected is None:
        return
    given = request.headers.get("x-api-key", "")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        given = token
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "missing or wrong API key (X-API-Key or Authorization: Bearer)")


async def _read_raw(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_image_bytes(request: Request, limit: int) -> bytes:
    """The image from a raw body (image/* or application/octet-stream) or a multipart ``file``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length")
    multipart = content_type == "multipart/form-data"
    if length is not None and length.isdigit():
        if int(length) > limit + (MULTIPART_OVERHEAD if multipart else 0):
            raise ApiError(413, f"body of {length} bytes is larger than the limit of {limit}")
    if not multipart:
        if content_type and not (
            content_type.startswith("image/") or content_type == "application/octet-stream"
        ):
            raise ApiError(
                415,
                f"content type {content_type!r}: send the image as image/* or "
                "application/octet-stream, or as a multipart/form-data field 'file'",
            )
        return await _read_raw(request, limit)
    if length is None:
        raise ApiError(411, "multipart uploads need a Content-Length header")
    form = await request.form(max_files=1, max_fields=8)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "multipart body without a file field named 'file'")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"file larger than the limit of {limit} bytes")
    return data


@router.post("/v1/segment")
async def segment(
    request: Request,
    format: Literal["index", "color", "overlay", "labelids", "json"] = "index",
    confidence: bool = Query(False, description="Add the mean top-class probability header."),
    mode: Literal["whole", "slide"] | None = None,
    ms_flip: bool | None = None,
    opacity: float = Query(0.5, gt=0, le=1),
) -> Response:
    """Segments the image in the body; answers a PNG (or JSON) with timings in headers."""
    started = time.perf_counter()
    service = _service(request)
    _check_key(request, service)
    segmenter = service.segmenter
    if format == "labelids" and segmenter.classes != CITYSCAPES.classes:
        raise ApiError(400, "labelids needs a model with the 19 Cityscapes classes")
    data = await _read_image_bytes(request, service.settings.max_image_bytes)
    image = await run_in_threadpool(decode_image, data, service.settings.max_pixels)
    want_probs = confidence or format == "json"
    outcome = await service.segment(image, service.variant(mode, ms_flip), want_probs)
    body, media_type = await run_in_threadpool(
        lambda: encode_result(
            format,
            image=image,
            mask=outcome.mask,
            probs=outcome.probs,
            classes=segmenter.classes,
            palette=segmenter.palette,
            opacity=opacity,
        )
    )
    headers = {
        "X-Isaseg-Model": segmenter.loaded.entry.name,
        "X-Isaseg-Batch-Size": str(outcome.batch_size),
        "X-Isaseg-Queue-Ms": f"{outcome.queue_s * 1000:.2f}",
        "X-Isaseg-Inference-Ms": f"{outcome.inference_s * 1000:.2f}",
        "X-Isaseg-Total-Ms": f"{(time.perf_counter() - started) * 1000:.2f}",
    }
    if confidence and outcome.probs is not None:
        headers["X-Isaseg-Mean-Confidence"] = f"{float(outcome.probs.max(axis=0).mean()):.6f}"
    service.metrics.latency.observe(time.perf_counter() - started)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/v1/health")
async def health() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@router.get("/v1/ready")
async def ready(request: Request) -> JSONResponse:
    """Ready once the model is loaded and warmed up (503 before)."""
    is_ready = _service(request).ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/v1/models")
async def models(request: Request) -> dict[str, object]:
    """The served model: its entry name, classes, palette and test settings."""
    service = _service(request)
    _check_key(request, service)
    segmenter = service.segmenter
    test = segmenter.test
    return {
        "models": [
            {
                "name": segmenter.loaded.entry.name,
                "classes": list(segmenter.classes),
                "palette": [list(color) for color in segmenter.palette],
                "test": {
                    "mode": test.mode,
                    "scale": list(test.scale) if test.scale else None,
                    "crop_size": list(test.crop_size) if test.crop_size else None,
                    "stride": list(test.stride) if test.stride else None,
                    "ms_flip": segmenter.ms_flip,
                },
                "device": str(segmenter.device),
                "precision": segmenter.precision,
                "max_batch": service.settings.max_batch,
            }
        ]
    }


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus' text format."""
    service = _service(request)
    _check_key(request, service)
    body, content_type = service.metrics.render()
    return Response(body, media_type=content_type)


def error_response(exc: Exception) -> JSONResponse:
    """The JSON answer for a refused or failed request."""
    if isinstance(exc, ApiError):
        status, message, headers = exc.status, str(exc), exc.headers
    elif isinstance(exc, IsasegError):  # a request the model cannot take, e.g. its options
        status, message, headers = 400, str(exc), {}
    else:
        message = f"internal error ({type(exc).__name__}); see the server log"
        status, headers = 500, {}
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)
