"""``spc-fast serve``: the enhancer as an HTTP service on LitServe, with dynamic batching.

    POST /enhance     a multipart form with the photo in its ``image`` field, or the image file itself as the body
                      (``Content-Type: image/...``): 200 with the edited image, in the input's format;
                      ``?report=1``: 200 with the critic's report and the edit's record as JSON instead.
    GET  /health      200 "ok" once the pipeline is loaded (503 before).
    GET  /metrics     JSON: latency p50/p90/p99 (seconds), batch sizes, requests in flight, answers by status.

Concurrent requests are gathered into batches of up to --max-batch, waiting at most --batch-timeout-ms for a batch
to fill; the diffusion artist samples same-size images of a batch together. At most --max-queue requests are
admitted at a time (body arriving, queued or running); more get 503 with Retry-After. --timeout-s answers 504 to a
request still queued after that long and 408 to a body still arriving; a batch that is running is never
interrupted. Errors are JSON: {"error": "..."}.

The default pipeline needs no weights (analytic critic, rule artist). The service keeps no state between requests:
scale out by running replicas behind any HTTP load balancer (one per GPU, chosen with CUDA_VISIBLE_DEVICES), each
with its own /metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
from pathlib import Path

from spc_fast import imagefiles
from spc_fast.batch_command import PROG
from spc_fast.config import PRESETS, PipelineConfig, resolve

DEFAULT_PORT = 8000
DEFAULT_MAX_BYTES = 64 * 2**20
_PAYLOAD_SLACK = 4096  # the canonical JSON body around the base64 image


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    models = parser.add_argument_group("pipeline (default: the analytic critic and rule artist, no weights)")
    models.add_argument("--preset", choices=tuple(PRESETS), default="analytic", help="named configuration")
    models.add_argument("--config", type=Path, metavar="TOML", help="pipeline configuration file")
    models.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    models.add_argument("--critic", metavar="DIR", help="Qwen2.5-VL critic in the release layout, or 'tiny'")
    models.add_argument(
        "--artist", metavar="DIR", help="Qwen-Image-Edit-2509 artist directory, or 'tiny'; needs --critic"
    )
    models.add_argument(
        "--engine",
        metavar="DIR",
        help="an exported DiT step (spc-fast export --out DIR) samples in place of the DiT, whose weights are not "
        "loaded; the VAE (from --artist) and the critic stay PyTorch. Needs --artist",
    )
    http = parser.add_argument_group("service")
    http.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0; 127.0.0.1: local only)")
    http.add_argument("--port", type=_positive(int), default=DEFAULT_PORT, help=f"(default {DEFAULT_PORT})")
    http.add_argument("--max-batch", type=_positive(int), default=4, help="requests per batch (default 4)")
    http.add_argument(
        "--batch-timeout-ms", type=_positive(float), default=50.0, help="longest wait for a batch to fill (default 50)"
    )
    http.add_argument(
        "--max-pixels",
        type=_positive(int),
        default=imagefiles.max_pixels_limit(),
        help="largest image in pixels, read from its header: 413 above (default "
        f"${imagefiles.MAX_PIXELS_ENV} or {imagefiles.DEFAULT_MAX_PIXELS})",
    )
    http.add_argument(
        "--max-bytes",
        type=_positive(int),
        default=DEFAULT_MAX_BYTES,
        help=f"largest request body: 413 above (default {DEFAULT_MAX_BYTES})",
    )
    http.add_argument(
        "--max-queue",
        type=_positive(int),
        default=32,
        help="requests admitted at a time, queued or running: 503 with Retry-After above (default 32)",
    )
    http.add_argument(
        "--timeout-s",
        type=_positive(float),
        default=120.0,
        help="a request still queued after this long gets 504, a body still arriving after this long 408 (default 120)",
    )
    http.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    return parser.parse_args(argv)


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The preset, file and --set settings, then --critic/--artist (each a ``weights`` value) and --engine."""
    config = resolve(args.preset, file=args.config, overrides=args.set)
    if args.critic is not None:
        config = dataclasses.replace(config, critic=dataclasses.replace(config.critic, weights=args.critic))
    if args.artist is not None:
        if config.critic.weights is None:
            raise ValueError(
                "--artist needs --critic DIR: the artist is conditioned on the neural critic's hidden states"
            )
        config = dataclasses.replace(config, artist=dataclasses.replace(config.artist, weights=args.artist))
    if args.engine is not None:
        if config.artist.weights is None:
            raise ValueError("--engine needs --artist DIR (or 'tiny'): the VAE and scheduler come from there")
        config = dataclasses.replace(config, artist=dataclasses.replace(config.artist, engine=args.engine))
    return config


def build_server(args: argparse.Namespace):
    """The LitServer for ``args``: ``EnhanceAPI`` behind ``Edge``."""
    import litserve as ls

    from spc_fast.serve.api import EnhanceAPI
    from spc_fast.serve.edge import Edge

    api = EnhanceAPI(
        pipeline_config(args),
        max_pixels=args.max_pixels,
        max_batch_size=args.max_batch,
        batch_timeout=args.batch_timeout_ms / 1000,
    )
    edge = {
        "max_in_flight": args.max_queue,
        "max_bytes": args.max_bytes,
        "max_pixels": args.max_pixels,
        "body_timeout": args.timeout_s,
    }
    base64_bytes = 4 * -(-args.max_bytes // 3)
    return ls.LitServer(
        api,
        # One worker: the pipeline places its models by its configuration (critic.device, artist.device), which
        # LitServe's accelerator would not change. One GPU per replica: CUDA_VISIBLE_DEVICES per process.
        accelerator="cpu",
        devices=1,
        workers_per_device=1,
        timeout=args.timeout_s,
        healthcheck_path="/health",
        max_payload_size=base64_bytes + _PAYLOAD_SLACK,
        middlewares=[(Edge, edge)],
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spc-fast serve``: runs until SIGINT/SIGTERM; returns the exit status."""
    args = parse_args(argv)
    try:
        import litserve  # noqa: F401
        import multipart  # noqa: F401
    except ImportError as error:
        raise SystemExit(
            f"{PROG} serve needs the serve extra ({error.name} is missing): pip install 'spc-fast[serve]'"
        ) from None
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    server = build_server(args)
    # LitServe shuts its API servers and workers down on KeyboardInterrupt only; SIGTERM (process managers, Ctrl-C
    # in a container) would otherwise leave them running, orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"{PROG} serve: http://{args.host}:{args.port}/enhance (health /health, metrics /metrics)", flush=True)
    server.run(host=args.host, port=args.port, num_api_servers=1, generate_client_file=False, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
