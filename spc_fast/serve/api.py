"""The enhancer as a LitServe API: LitServe's worker gathers concurrent requests into one ``predict`` call, which
runs ``Pipeline.enhance`` on the whole batch (the diffusion artist samples same-size images together).

Requests arrive as the canonical JSON body that ``edge.Edge`` builds: ``image`` (the file's bytes in base64),
``filename`` (``upload.<ext>``, after the format Pillow identified) and ``report`` (the JSON record instead of the
image).
Images are read and written through ``imagefiles`` on temporary files, so EXIF orientation, ICC profiles, alpha and
16-bit sources behave as in ``spc-fast enhance``.

A failure of one image must not fail its batch: LitServe fails every request of a batch when a hook raises, so
each hook catches the errors of its own item and ``encode_response`` answers them as a 4xx ``Response``.
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import litserve as ls
from starlette.responses import Response

from spc_fast import imagefiles
from spc_fast.batch import output_bit_depth
from spc_fast.config import PipelineConfig
from spc_fast.pipeline import EnhanceRecord, Pipeline

logger = logging.getLogger(__name__)

API_PATH = "/enhance"
BATCH_SIZE_HEADER = "X-Batch-Size"  # how many requests shared the predict call (edge.Edge records it)
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "TIFF": "image/tiff", "WEBP": "image/webp"}
_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp"}


@dataclass
class Decoded:
    """One request after ``decode_request``: the photo and what the answer needs, or the error to answer with."""

    photo: imagefiles.Photo | None = None
    metadata: imagefiles.ImageMetadata | None = None
    output_format: str = "PNG"
    report: bool = False
    status: int = 200
    error: str = ""


@dataclass
class Enhanced:
    """One answer from ``predict``: the edited image and its record, or the error."""

    request: Decoded
    batch_size: int
    image: object = None
    record: EnhanceRecord | None = None
    status: int = 200
    error: str = ""


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The JSON body every 4xx/5xx answer of the service has: ``{"error": message}``."""
    body = json.dumps({"error": message}).encode()
    return Response(content=body, status_code=status, media_type="application/json", headers=headers)


def output_format(filename: str) -> str:
    """The format the answer is written in: the upload's, where ``imagefiles`` can write it, else PNG."""
    fmt = imagefiles.FORMATS.get(Path(filename).suffix.lower(), "PNG")
    return fmt if fmt in MEDIA_TYPES else "PNG"


class EnhanceAPI(ls.LitAPI):
    """``POST /enhance``: the pipeline of ``config`` (default: the weight-free analytic critic and rule artist).

    max_pixels: the decoder's pixel limit (``edge.Edge`` refuses larger images from the header before this)."""

    def __init__(
        self,
        config: PipelineConfig | None = None,
        *,
        max_pixels: int | None = None,
        max_batch_size: int = 4,
        batch_timeout: float = 0.05,
    ):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=API_PATH)
        self.config = config if config is not None else PipelineConfig()
        self.max_pixels = max_pixels
        self.pipeline: Pipeline | None = None

    def setup(self, device: str) -> None:
        # Runs in LitServe's worker, which /health waits for. The devices are the configuration's
        # (``artist.device``/``critic.device``), not LitServe's accelerator.
        self.pipeline = Pipeline.from_config(self.config)

    def decode_request(self, request: dict) -> Decoded:
        filename = str(request.get("filename") or "upload.png")
        wanted = Decoded(output_format=output_format(filename), report=bool(request.get("report", False)))
        try:
            data = base64.b64decode(request["image"], validate=True)
        except (KeyError, TypeError, ValueError):
            wanted.status, wanted.error = (
                422,
                "the body has no base64 'image'; POST the photo to /enhance as image=@FILE",
            )
            return wanted
        with tempfile.TemporaryDirectory(prefix="spc-fast-serve-") as folder:
            path = Path(folder) / f"upload{Path(filename).suffix.lower() or '.png'}"
            path.write_bytes(data)
            try:
                wanted.photo = imagefiles.read_photo(path, max_pixels=self.max_pixels)
                wanted.metadata = imagefiles.read_metadata(path)
            except Exception as error:  # answered per request: one bad upload must not fail its batch
                wanted.status, wanted.error = 400, f"the image could not be read: {_without_path(error, path)}"
        return wanted

    def batch(self, inputs: list[Decoded]) -> list[Decoded]:
        return list(inputs)

    def predict(self, requests: list[Decoded] | Decoded) -> list[Enhanced] | Enhanced:
        # With max_batch_size 1 LitServe passes one request and skips batch/unbatch.
        batch = requests if isinstance(requests, list) else [requests]
        answers = [Enhanced(r, len(batch), status=r.status, error=r.error) for r in batch]
        self._enhance([a for a in answers if a.request.photo is not None])
        return answers if isinstance(requests, list) else answers[0]

    def _enhance(self, answers: list[Enhanced]) -> None:
        """Edit the images of ``answers`` together; when that fails, one by one, so the image at fault fails alone."""
        if not answers:
            return
        try:
            result = self.pipeline.enhance([a.request.photo.pixels for a in answers])
        except Exception as error:
            if len(answers) > 1:
                for answer in answers:
                    self._enhance([answer])
                return
            logger.warning("enhance failed: %s", error)
            answers[0].status, answers[0].error = 422, f"the pipeline could not enhance this image: {error}"
            return
        for answer, image, record in zip(answers, result.images, result.records, strict=True):
            answer.image, answer.record = image, record

    def unbatch(self, output: list[Enhanced]) -> list[Enhanced]:
        return output

    def encode_response(self, answer: Enhanced) -> Response:
        if answer.error:
            return error_response(answer.status, answer.error)
        headers = {BATCH_SIZE_HEADER: str(answer.batch_size)}
        request = answer.request
        photo = request.photo
        if request.report:
            body = {"width": photo.pixels.shape[2], "height": photo.pixels.shape[1], **answer.record.to_json()}
            return Response(content=json.dumps(body), media_type="application/json", headers=headers)
        try:
            content = _encoded(answer.image, photo, request.metadata, request.output_format)
        except Exception as error:
            return error_response(422, f"the edited image could not be written as {request.output_format}: {error}")
        return Response(content=content, media_type=MEDIA_TYPES[request.output_format], headers=headers)


def _encoded(image, photo: imagefiles.Photo, metadata: imagefiles.ImageMetadata | None, fmt: str) -> bytes:
    """``image`` as a file of format ``fmt`` written by ``imagefiles.save_image`` (alpha, EXIF, ICC, 16-bit kept)."""
    with tempfile.TemporaryDirectory(prefix="spc-fast-serve-") as folder:
        path = Path(folder) / f"edited{_SUFFIXES[fmt]}"
        alpha = photo.alpha if fmt != "JPEG" else None
        imagefiles.save_image(path, image, source=metadata, alpha=alpha, bit_depth=output_bit_depth(photo.pixels, path))
        return path.read_bytes()


def _without_path(error: Exception, path: Path) -> str:
    """The error's message without the temporary file's name, which means nothing to the client."""
    return str(error).replace(f"{path}: ", "").replace(str(path), "the upload")
