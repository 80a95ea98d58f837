"""``spc-fast serve`` as a client sees it: the server runs in its own process on a free localhost port (the
analytic pipeline, no weights) and the tests send real HTTP requests; two hook-level cases (a stalled body, a batch
the pipeline refuses) run in-process."""

import asyncio
import base64
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import pytest
import requests
from PIL import Image

from spc_fast.pipeline import Pipeline

pytest.importorskip("litserve", reason="spc-fast serve needs the [serve] extra: pip install 'spc-fast[serve]'")
from spc_fast.serve.api import EnhanceAPI  # noqa: E402
from spc_fast.serve.edge import Edge  # noqa: E402

MAX_PIXELS = 100_000
MAX_BYTES = 200_000
MAX_QUEUE = 6


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _photo(fmt: str = "PNG", size: tuple[int, int] = (48, 32)) -> bytes:
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _live_group_members(group: int) -> list[int]:
    """The processes of process group ``group`` that have not exited (zombies excluded)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (LitServe's workers included), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _server(log: Path, flags: str = ""):
    """A running ``spc-fast serve`` on a free localhost port: yields (its URL, its process)."""
    port = _free_port()
    command = [sys.executable, "-m", "spc_fast.serve.server", "--host=127.0.0.1", f"--port={port}", *flags.split()]
    # stdout to a file: LitServe's workers inherit it and would keep a pipe open after the server stops
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(base + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not become healthy:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base, process
    finally:
        _kill_group(process)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    flags = (
        f"--max-batch=4 --batch-timeout-ms=500 --max-pixels={MAX_PIXELS} --max-bytes={MAX_BYTES} "
        f"--max-queue={MAX_QUEUE} --timeout-s=60"
    )
    with _server(tmp_path_factory.mktemp("serve") / "server.log", flags) as (base, _):
        yield base


def _post(url: str, data: bytes, fmt: str = "png", **params) -> requests.Response:
    return requests.post(
        url + "/enhance", files={"image": (f"photo.{fmt}", data, f"image/{fmt}")}, params=params, timeout=60
    )


def _together(send, bodies: list[bytes]) -> list[requests.Response]:
    """``send`` each body from its own thread, all released at once."""
    start = Barrier(len(bodies))

    def released(body: bytes) -> requests.Response:
        start.wait()
        return send(body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(released, bodies))


def test_round_trip_png_multipart(url):
    answer = _post(url, _photo("PNG"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    edited = Image.open(io.BytesIO(answer.content))
    assert (edited.format, edited.size) == ("PNG", (48, 32))
    assert int(answer.headers["x-batch-size"]) >= 1


def test_round_trip_jpeg_raw_body(url):
    answer = requests.post(url + "/enhance", data=_photo("JPEG"), headers={"content-type": "image/jpeg"}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(answer.content)).format == "JPEG"


def test_report_is_the_record(url):
    answer = _post(url, _photo("PNG"), report="1")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["width"], report["height"]) == (48, 32)
    assert {"critique", "parameters", "attributes_before", "attributes_after", "rewards"} <= report.keys()
    assert isinstance(report["critique"]["suggestions"], list)


def test_concurrent_requests_share_a_batch(url):
    photo = _photo("PNG")
    seen = []
    for _ in range(3):  # arrival is up to the OS scheduler: a few tries for four requests inside one 500 ms window
        answers = _together(lambda data: _post(url, data), [photo] * 4)
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        seen += [int(a.headers["x-batch-size"]) for a in answers]
        if max(seen) > 1:
            break
    assert max(seen) > 1, seen
    batch_sizes = requests.get(url + "/metrics", timeout=10).json()["batch_sizes"]
    assert any(int(size) > 1 for size in batch_sizes), batch_sizes


def test_over_the_byte_limit_is_413(url):
    answer = requests.post(
        url + "/enhance", data=b"\0" * (MAX_BYTES + 1), headers={"content-type": "image/png"}, timeout=60
    )
    assert answer.status_code == 413
    assert str(MAX_BYTES) in answer.json()["error"]


def test_over_the_pixel_limit_is_413(url):
    large = _photo("PNG", (400, 300))
    assert len(large) < MAX_BYTES  # refused for its pixels, not its bytes
    answer = _post(url, large)
    assert answer.status_code == 413
    assert "pixels" in answer.json()["error"] and "--max-pixels" in answer.json()["error"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"this is not an image", "image/png", 415),  # malformed: Pillow identifies nothing
        (_photo("PNG")[:80], "image/png", 400),  # truncated: the header reads, the pixels do not
        (_photo("PNG"), "text/plain", 415),  # wrong content type
        (b"", "image/png", 422),  # empty body
    ],
    ids=["malformed", "truncated", "text-plain", "empty"],
)
def test_bad_bodies_are_4xx_with_a_message(url, body, content_type, status):
    answer = requests.post(url + "/enhance", data=body, headers={"content-type": content_type}, timeout=60)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]


def test_form_without_an_image_field_is_422(url):
    answer = requests.post(url + "/enhance", files={"photo": ("a.png", _photo("PNG"), "image/png")}, timeout=60)
    assert answer.status_code == 422
    assert "'image'" in answer.json()["error"]


def test_bad_image_fails_alone_in_its_batch(url):
    good, truncated = _photo("PNG"), _photo("PNG")[:80]

    def send(data):
        return requests.post(url + "/enhance", data=data, headers={"content-type": "image/png"}, timeout=60)

    answers = _together(send, [good, truncated, good])
    assert [a.status_code for a in answers] == [200, 400, 200]


def _held_request(port: int) -> socket.socket:
    """A request whose body never finishes arriving: it holds one admission slot until the socket closes."""
    held = socket.create_connection(("127.0.0.1", port))
    held.sendall(
        b"POST /enhance HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\nab"
    )
    return held


def test_burst_beyond_the_queue_bound_gets_503_and_the_server_recovers(url):
    port = int(url.rsplit(":", 1)[1])
    held = [_held_request(port) for _ in range(MAX_QUEUE)]
    try:
        deadline = time.monotonic() + 10
        while requests.get(url + "/metrics", timeout=10).json()["in_flight"] < MAX_QUEUE:
            assert time.monotonic() < deadline, "the held requests were not admitted"
            time.sleep(0.05)
        with ThreadPoolExecutor(4) as pool:
            burst = list(pool.map(lambda _: _post(url, _photo("PNG")), range(4)))
        assert [a.status_code for a in burst] == [503] * 4
        assert all(int(a.headers["retry-after"]) >= 1 for a in burst)
        assert "capacity" in burst[0].json()["error"]
    finally:
        for connection in held:
            connection.close()
    deadline = time.monotonic() + 10
    while requests.get(url + "/metrics", timeout=10).json()["in_flight"] > 0:
        assert time.monotonic() < deadline, "the closed connections still hold admission slots"
        time.sleep(0.05)
    assert requests.get(url + "/health", timeout=10).status_code == 200
    assert _post(url, _photo("PNG")).status_code == 200
    assert requests.get(url + "/metrics", timeout=10).json()["rejected_503"] >= 4


def test_metrics(url):
    _post(url, _photo("PNG"))
    metrics = requests.get(url + "/metrics", timeout=10).json()
    assert {"latency_s", "batch_sizes", "in_flight", "max_in_flight", "responses", "rejected_503"} <= metrics.keys()
    latency = metrics["latency_s"]
    assert latency["count"] >= 1 and 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    assert metrics["max_in_flight"] == MAX_QUEUE
    assert json.dumps(metrics)


def test_a_body_that_never_arrives_is_408_and_frees_its_slot():
    async def never_called(scope, receive, send):
        raise AssertionError("the request reached the API")

    async def stalled_receive():
        await asyncio.sleep(3600)

    sent = []

    async def send(message):
        sent.append(message)

    edge = Edge(never_called, max_in_flight=1, max_bytes=1000, max_pixels=1000, body_timeout=0.05)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/enhance",
        "query_string": b"",
        "headers": [(b"content-type", b"image/png")],
    }
    asyncio.run(edge(scope, stalled_receive, send))
    assert sent[0]["status"] == 408
    assert "within 0.05 s" in json.loads(sent[1]["body"])["error"]
    assert edge.in_flight == 0


def test_sigterm_to_the_server_stops_all_its_processes(tmp_path):
    with _server(tmp_path / "server.log") as (_, process):
        group = process.pid
        assert len(_live_group_members(group)) > 1  # LitServe's API server and inference worker
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _live_group_members(group):
            assert time.monotonic() < deadline, f"left running after SIGTERM: {_live_group_members(group)}"
            time.sleep(0.2)


class _RefusesWideImages(Pipeline):
    """The analytic pipeline, failing any call that holds an image wider than 60 pixels."""

    def enhance(self, images):
        if any(image.shape[-1] > 60 for image in images):
            raise RuntimeError("this image is too wide for the test's pipeline")
        return super().enhance(images)


def test_a_batch_the_pipeline_refuses_is_retried_image_by_image():
    api = EnhanceAPI(max_batch_size=3)
    api.pipeline = _RefusesWideImages()

    def request(data: bytes) -> dict:
        return {"image": base64.b64encode(data).decode(), "filename": "upload.png", "report": False}

    batch = api.batch([api.decode_request(request(_photo("PNG", size))) for size in ((48, 32), (64, 32), (40, 40))])
    answers = [api.encode_response(answer) for answer in api.unbatch(api.predict(batch))]
    assert [a.status_code for a in answers] == [200, 422, 200]
    assert "too wide" in json.loads(answers[1].body)["error"]
    assert [a.headers.get("x-batch-size") for a in answers] == ["3", None, "3"]
