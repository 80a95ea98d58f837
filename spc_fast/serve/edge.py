"""The service's front door, a pure ASGI middleware in front of LitServe's app: what LitServe does not do itself.

- Admission: at most ``max_in_flight`` ``/enhance`` requests are admitted (their bodies arriving, queued or
  running); one more is answered 503 with ``Retry-After`` at once. LitServe's own queue is unbounded, so a burst
  would otherwise wait until its timeout. A body that does not arrive within ``body_timeout`` gets 408, so slow
  clients cannot hold the slots.
- Checks before any decoding: the body's byte limit (413), its content type (415: multipart with an ``image`` file
  field, or a raw ``image/*`` / ``application/octet-stream`` body), a missing field (422), a body Pillow does not
  identify (415), and the pixel limit read from the image header alone (413).
- Rewriting: LitServe hands the LitAPI only the parsed body (no query string, no headers) and parses every other
  content type as JSON, so the request goes on as one canonical JSON body ``{image: base64, filename, report}``
  (``filename`` carries the format Pillow identified; ``report`` comes from ``?report=1`` or a form field).
- ``GET /metrics``: JSON with latency percentiles, the batch sizes ``predict`` saw, requests in flight and the
  answers by status. The numbers are this process's: run one API server per replica.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import time
from collections import Counter, deque
from urllib.parse import parse_qs

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import Headers
from starlette.requests import Request

from spc_fast.serve.api import API_PATH, BATCH_SIZE_HEADER

METRICS_PATH = "/metrics"
RAW_TYPES = ("image/", "application/octet-stream")
_LATENCY_WINDOW = 1024  # the percentiles describe the last this many answered requests
_FORMAT_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "TIFF": ".tif", "WEBP": ".webp"}


class Refused(Exception):
    """A request answered by ``Edge`` itself: the status and the message that names the fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Edge:
    """ASGI middleware (LitServer ``middlewares=[(Edge, {...})]``); see the module docstring."""

    def __init__(self, app, *, max_in_flight: int, max_bytes: int, max_pixels: int, body_timeout: float = 30.0):
        self.app = app
        self.body_timeout = body_timeout
        self.max_in_flight = max_in_flight
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.in_flight = 0
        self.latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self.batch_sizes: Counter[int] = Counter()
        self.statuses: Counter[int] = Counter()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == METRICS_PATH:
            await _answer(send, 200, json.dumps(self.metrics()).encode())
        elif scope["path"] == API_PATH and scope["method"] == "POST":
            await self._enhance(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def metrics(self) -> dict[str, object]:
        """What ``GET /metrics`` answers."""
        ordered = sorted(self.latencies)
        return {
            "latency_s": {f"p{q}": _percentile(ordered, q) for q in (50, 90, 99)} | {"count": len(ordered)},
            "batch_sizes": {str(size): count for size, count in sorted(self.batch_sizes.items())},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "responses": {str(status): count for status, count in sorted(self.statuses.items())},
            "rejected_503": self.statuses[503],
        }

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about one request's latency (p90), at least 1."""
        ordered = sorted(self.latencies)
        return max(1, math.ceil(_percentile(ordered, 90) or 1))

    async def _enhance(self, scope, receive, send) -> None:
        started = time.monotonic()
        if self.in_flight >= self.max_in_flight:
            self.statuses[503] += 1
            message = f"the service is at capacity ({self.max_in_flight} requests in flight); retry later"
            await _answer(send, 503, _error(message), {"retry-after": str(self.retry_after())})
            return
        self.in_flight += 1
        status = 500
        try:
            try:
                body = await self._canonical_body(scope, receive)
            except Refused as refusal:
                status = refusal.status
                await _answer(send, status, _error(str(refusal)))
                return

            async def record(message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    batch = Headers(raw=message.get("headers", [])).get(BATCH_SIZE_HEADER)
                    if batch is not None:
                        self.batch_sizes[int(batch)] += 1
                await send(message)

            await self.app(_json_scope(scope, len(body)), _replay(body, receive), record)
        finally:
            self.in_flight -= 1
            self.statuses[status] += 1
            self.latencies.append(time.monotonic() - started)

    async def _canonical_body(self, scope, receive) -> bytes:
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "").lower()
        multipart = content_type.startswith("multipart/form-data")
        if not multipart and not content_type.startswith(RAW_TYPES):
            raise Refused(
                415,
                f"content type {content_type or 'missing'!r}: send a multipart form with the photo "
                "in its 'image' field, or the image file itself as an image/* body",
            )
        body = await self._read_body(headers, receive)
        report = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("report", ["0"])[-1] == "1"
        if multipart:
            try:
                form = await Request(scope, _replay(body, receive)).form(max_part_size=self.max_bytes)
            except Exception as error:  # starlette's parser errors differ by version; all mean a malformed form
                raise Refused(400, f"the multipart form could not be parsed ({error}); send image=@FILE") from None
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise Refused(422, "the form has no 'image' file field; send the photo as image=@FILE")
            report = report or form.get("report") == "1"
            data = await upload.read()
        else:
            data = body
        suffix = self._checked_suffix(data)
        payload = {"image": base64.b64encode(data).decode("ascii"), "filename": f"upload{suffix}", "report": report}
        return json.dumps(payload).encode()

    async def _read_body(self, headers: Headers, receive) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise Refused(413, f"the request has {int(declared)} bytes, over the limit of {self.max_bytes}")
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), timeout=self.body_timeout)
            except TimeoutError:  # a client this slow would hold an admission slot indefinitely
                raise Refused(408, f"the body did not arrive within {self.body_timeout:g} s; send it at once") from None
            if message["type"] == "http.disconnect":
                raise Refused(400, "the client disconnected before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise Refused(413, f"the request has more than {self.max_bytes} bytes, the limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _checked_suffix(self, data: bytes) -> str:
        """The file suffix of ``data``'s format, after the pixel limit is checked on its header (nothing decoded)."""
        if not data:
            raise Refused(422, "the image is empty; send the photo's bytes")
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height, fmt = image.width, image.height, image.format
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise Refused(
                415, f"the body is not an image the service reads ({error}); send a PNG, JPEG, TIFF or WebP file"
            ) from None
        if width * height > self.max_pixels:
            raise Refused(
                413,
                f"the image has {width}x{height} = {width * height} pixels, over the limit of "
                f"{self.max_pixels}; downscale it or raise --max-pixels",
            )
        registered = Image.registered_extensions()
        return _FORMAT_SUFFIXES.get(fmt) or next((s for s, f in registered.items() if f == fmt), ".png")


def _percentile(ordered: list[float], q: int) -> float | None:
    """The nearest-rank ``q``-th percentile of sorted values (None without values)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def _answer(send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _json_scope(scope, length: int) -> dict:
    kept = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
    headers = [*kept, (b"content-type", b"application/json"), (b"content-length", str(length).encode())]
    return {**scope, "headers": headers}


def _replay(body: bytes, receive):
    """An ASGI ``receive`` that gives ``body`` (already read) once, then passes on what the client's connection
    says (a disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
