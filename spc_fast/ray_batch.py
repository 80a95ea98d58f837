"""Enhancing a catalogue too large for one machine: ``spc-fast enhance --ray IN -o OUT`` on a Ray cluster.

The driver lists IN (a local folder, or any URI pyarrow's filesystems open: ``s3://``, ``gs://``, ``hdfs://``,
``file://``), sub-folders included, and decides every output before any pixel is read, as ``spc-fast enhance``
does: hidden files and other extensions are skipped, an existing output fails its input unless ``overwrite`` (or
is skipped with ``skip_existing``). Ray Data reads the files and a pool of actors, each holding one pipeline built
once (a GPU each when the models need one), enhances them through ``batch.run_batch``, the code ``spc-fast enhance``
runs, so the pixels, metadata and failure messages are the same. Each output keeps its input's relative path under
OUT; a local folder is written with ``imagefiles`` (atomic, never clobbering), a URI through pyarrow (a temporary
name moved into place on a local filesystem; an object store publishes an object whole). Every file ends as one
line of the JSON-lines report (``OUT/report.jsonl`` unless another path is given): written, failed or skipped.
"""

from __future__ import annotations

import itertools
import json
import logging
import posixpath
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spc_fast import imagefiles
from spc_fast.batch_command import PROG, version
from spc_fast.batch_plan import OUTPUT_EXISTS
from spc_fast.config import PipelineConfig, to_dict

RAY_EXTRA = "pip install 'spc-fast[ray]'"
REPORT_NAME = "report.jsonl"


@dataclass
class RaySummary:
    """What a cluster run did: counts of written, failed and skipped inputs, and where the report is."""

    written: int
    failed: int
    skipped: int
    report: str


@dataclass(frozen=True)
class Location:
    """A folder on a pyarrow filesystem. ``uri``: as the user gave it (for messages); ``staged``: written through
    pyarrow (a URI) rather than by ``imagefiles`` (a plain local path)."""

    filesystem: object
    root: str
    uri: str
    staged: bool

    @classmethod
    def parse(cls, uri: str) -> Location:
        from pyarrow import fs

        if "://" not in uri:
            return cls(fs.LocalFileSystem(), str(Path(uri).absolute()), uri, False)
        try:
            filesystem, root = fs.FileSystem.from_uri(uri)
        except Exception as error:  # pyarrow raises ArrowInvalid, OSError or ValueError by scheme
            raise ValueError(f"{uri}: pyarrow cannot open this URI ({error}); give a local folder or a URI such "
                             "as s3://bucket/photos") from error
        return cls(filesystem, root.rstrip("/") or "/", uri.rstrip("/"), True)

    def path(self, relative: str) -> str:
        return posixpath.join(self.root, relative)

    def name(self, relative: str) -> str:
        return posixpath.join(self.uri, relative)


def output_name(relative: str) -> str:
    """The output's relative path: the input's, with a ``.png`` name for a format read but not written (BMP, GIF,
    ...), the rule of ``batch_plan.plan_outputs``."""
    path = PurePosixPath(relative)
    return str(path if path.suffix.lower() in imagefiles.FORMATS else path.with_suffix(".png"))


def _files(location: Location) -> list[str]:
    """Relative paths of the files under ``location`` (sorted); an empty list when it does not exist."""
    from pyarrow import fs

    selector = fs.FileSelector(location.root, recursive=True, allow_not_found=True)
    infos = location.filesystem.get_file_info(selector)
    return sorted(info.path[len(location.root) :].lstrip("/") for info in infos if info.type == fs.FileType.File)


def plan(source: Location, output: Location, *, overwrite: bool, skip_existing: bool):
    """(relative inputs to enhance, their lines of the report that are already known: skipped and failed)."""
    from pyarrow import fs

    if overwrite and skip_existing:
        raise ValueError("--overwrite and --skip-existing contradict each other; pass one of them")
    kind = source.filesystem.get_file_info(source.root).type
    if kind != fs.FileType.Directory:
        what = "does not exist" if kind == fs.FileType.NotFound else "is not a folder"
        raise ValueError(f"{source.uri}: {what}; --ray enhances a folder (or a URI prefix) of images")
    existing = set(_files(output))
    todo, known, owners = [], [], {}
    for relative in _files(source):
        target = output_name(relative)
        if any(part.startswith(".") for part in PurePosixPath(relative).parts):
            known.append({"status": "skipped", "path": source.name(relative), "reason": "hidden file"})
        elif PurePosixPath(relative).suffix.lower() not in imagefiles.READABLE:
            known.append({"status": "skipped", "path": source.name(relative), "reason": "not an image extension"})
        elif target in owners:
            known.append({"status": "failed", "input": source.name(relative), "error": f"{source.name(relative)}: "
                          f"its output {output.name(target)} is also the output of {owners[target]}; rename one"})
        elif target in existing and skip_existing:
            known.append({"status": "skipped", "path": source.name(relative), "reason": OUTPUT_EXISTS})
        elif target in existing and not overwrite:
            error = f"{output.name(target)}: already exists; pass --overwrite to replace it, or --skip-existing"
            known.append({"status": "failed", "input": source.name(relative), "error": f"{error} to keep it"})
        else:
            owners[target] = source.name(relative)
            todo.append(relative)
    if not todo and not known:
        raise ValueError(f"{source.uri}: holds no files; pass a folder of photos")
    return todo, known


class Enhancer:
    """A Ray Data actor: builds the pipeline once, then enhances each batch of ``{"bytes", "path"}`` rows into
    report lines (``{"line": [...]}``)."""

    def __init__(self, config: PipelineConfig, source: Location, output: Location, overwrite: bool,
                 skip_existing: bool):
        from spc_fast.pipeline import Pipeline

        self.pipeline = Pipeline.from_config(config)
        self.batch_size = config.batch_size
        self.source, self.output = source, output
        self.overwrite, self.skip_existing = overwrite, skip_existing

    def __call__(self, rows: dict) -> dict:
        import numpy as np

        from spc_fast.batch import BatchPlan, run_batch

        with tempfile.TemporaryDirectory(prefix="spc-fast-ray-") as scratch:
            pairs, names = [], {}
            for index, (data, path) in enumerate(zip(rows["bytes"], rows["path"], strict=True)):
                relative = str(path)[len(self.source.root) :].lstrip("/")
                local_input = Path(scratch, "in", str(index), PurePosixPath(relative).name)
                local_input.parent.mkdir(parents=True)
                local_input.write_bytes(data)
                target = output_name(relative)
                if self.output.staged:
                    local_output = Path(scratch, "out", str(index), PurePosixPath(target).name)
                else:
                    local_output = Path(self.output.path(target))
                local_output.parent.mkdir(parents=True, exist_ok=True)
                pairs.append((local_input, local_output))
                names[str(local_input)] = self.source.name(relative)
                names[str(local_output)] = (self.output.name(target), target)
            plan = BatchPlan(pairs, overwrite=self.overwrite, skip_existing=self.skip_existing)
            result = run_batch(plan, self.pipeline, batch_size=self.batch_size)
            lines = [self._published(entry, names) for entry in result.written]
            lines += [{"status": "failed", "input": names[f.input], "error": f.error.replace(f.input, names[f.input])}
                      for f in result.failures]
            lines += [{"status": "skipped", "path": names[s.path], "reason": s.reason} for s in result.skipped]
        return {"line": np.array([json.dumps(line, default=str) for line in lines], dtype=object)}

    def _published(self, entry: dict, names: dict) -> dict:
        """The report line of a written image, once a staged output is copied to its place."""
        source = names[entry["input"]]
        uri, relative = names[entry["output"]]
        if self.output.staged:
            try:
                self._upload(Path(entry["output"]), relative, uri)
            except imagefiles.ImageError as error:  # its output appeared while it was being enhanced
                if self.skip_existing:
                    return {"status": "skipped", "path": source, "reason": OUTPUT_EXISTS}
                return {"status": "failed", "input": source, "error": str(error)}
            except Exception as error:
                return {"status": "failed", "input": source, "error": f"{uri}: cannot write the output ({error})"}
        return {"status": "written", **entry, "input": source, "output": uri}

    def _upload(self, local: Path, relative: str, uri: str) -> None:
        from pyarrow import fs

        filesystem, path = self.output.filesystem, self.output.path(relative)
        if not self.overwrite and filesystem.get_file_info(path).type != fs.FileType.NotFound:
            raise imagefiles.ImageError(f"{uri}: already exists; pass --overwrite to replace it")
        local_filesystem = isinstance(filesystem, fs.LocalFileSystem)
        if local_filesystem:  # object stores have no folders to make
            filesystem.create_dir(posixpath.dirname(path), recursive=True)
        written = posixpath.join(posixpath.dirname(path), f".{local.name}.{id(self)}.tmp") if local_filesystem else path
        try:
            with filesystem.open_output_stream(written) as stream:
                stream.write(local.read_bytes())
            if local_filesystem:
                filesystem.move(written, path)
        except BaseException:
            if local_filesystem and filesystem.get_file_info(written).type == fs.FileType.File:
                filesystem.delete_file(written)
            raise


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ValueError(f"--ray needs Ray Data, which is not installed; install it with {RAY_EXTRA}") from error
    return ray


def enhance_on_ray(
    inputs: str,
    output: str,
    config: PipelineConfig,
    *,
    address: str | None = None,
    actors: int = 1,
    gpus_per_actor: float | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    report: str | None = None,
    on_line: Callable[[dict], None] | None = None,
) -> RaySummary:
    """Enhance every image under ``inputs`` into ``output`` (folders or URIs) with ``actors`` pipelines on the Ray
    cluster at ``address`` (None: the one this process is connected to, else a local one), each holding
    ``gpus_per_actor`` GPUs (default: 1 for neural models, 0 for the analytic pipeline) and enhancing
    ``config.batch_size`` images together. ``on_line`` sees each report line as it arrives."""
    if actors < 1:
        raise ValueError(f"--actors must be at least 1, got {actors}")
    neural = (config.critic.weights or config.artist.weights) is not None and config.artist.device != "cpu"
    gpus = (1.0 if neural else 0.0) if gpus_per_actor is None else gpus_per_actor
    if gpus < 0:
        raise ValueError(f"--gpus-per-actor must be 0 or more, got {gpus}")
    ray = _import_ray()
    from pyarrow import fs

    source, target = Location.parse(inputs), Location.parse(output)
    todo, known = plan(source, target, overwrite=overwrite, skip_existing=skip_existing)
    report_location = Location.parse(posixpath.dirname(report) or ".") if report else target
    report_path = report_location.path(posixpath.basename(report) if report else REPORT_NAME)
    where = report or target.name(REPORT_NAME)
    if not overwrite and report_location.filesystem.get_file_info(report_path).type != fs.FileType.NotFound:
        raise ValueError(f"{where}: the report already exists; pass --overwrite to replace it, or name another "
                         "with --report")
    if isinstance(report_location.filesystem, fs.LocalFileSystem):
        report_location.filesystem.create_dir(posixpath.dirname(report_path), recursive=True)
    with _connected(ray, address):
        resources = ray.cluster_resources()
        if gpus > resources.get("GPU", 0.0):  # Ray would wait for them for ever
            raise ValueError(f"each actor asks for {gpus:g} GPUs and the cluster has {resources.get('GPU', 0.0):g}; "
                             "pass --gpus-per-actor 0 to run on CPUs, or join a cluster with GPUs (--address)")
        # actors holding every CPU would starve the read tasks that feed them: leave one CPU free where few exist
        cpus_per_actor = min(1.0, max(resources.get("CPU", 1.0) - 1.0, 0.5) / actors)
        counts = {"written": 0, "failed": 0, "skipped": 0}

        def lines():
            yield {"version": version(), "inputs": source.uri, "output": target.uri, "actors": actors,
                   "gpus_per_actor": gpus, "config": to_dict(config)}
            rows = []
            if todo:
                dataset = ray.data.read_binary_files([source.path(r) for r in todo], filesystem=source.filesystem,
                                                     include_paths=True)
                rows = dataset.map_batches(
                    Enhancer, fn_constructor_args=(config, source, target, overwrite, skip_existing),
                    compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor, num_gpus=gpus or None,
                    batch_size=config.batch_size,
                ).iter_rows()
            for line in itertools.chain(known, (json.loads(row["line"]) for row in rows)):
                counts[line["status"]] += 1
                if on_line is not None:
                    on_line(line)
                yield line

        try:
            _write_lines(report_location, report_path, lines(), overwrite=overwrite)
        except ray.exceptions.RayError as error:  # an actor could not start or crashed: its last line says why
            reason = [line for line in str(error).splitlines() if line.strip()][-1:] or [type(error).__name__]
            raise ValueError(f"the cluster run failed: {reason[0].strip()} (Ray's logs hold the rest)") from error
        return RaySummary(counts["written"], counts["failed"], counts["skipped"], where)


@contextmanager
def _connected(ray, address: str | None) -> Iterator[None]:
    """Connected to Ray inside the block: when this process is not connected yet, to ``address`` (None: a local
    instance), shut down afterwards with the signal handlers put back (``ray.init`` leaves its SIGTERM handler)."""
    if ray.is_initialized():
        yield
        return
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
        if threading.current_thread() is threading.main_thread():
            for signum, handler in handlers.items():
                signal.signal(signum, handler)


def _write_lines(location: Location, path: str, lines, *, overwrite: bool) -> None:
    """Write the report as the lines arrive: atomically in a local folder, as one object through pyarrow else."""
    encoded = (json.dumps(line, default=str).encode() + b"\n" for line in lines)
    if not location.staged:
        imagefiles.atomic_write(path, lambda file: file.writelines(encoded), overwrite=overwrite)
        return
    with location.filesystem.open_output_stream(path) as stream:
        for chunk in encoded:
            stream.write(chunk)


def run_command(args, config: PipelineConfig) -> int:
    """``spc-fast enhance --ray``: check the flags, run ``enhance_on_ray`` and print one line per file and the
    summary; exit status 1 when a file failed."""
    if not args.ray:
        raise ValueError("--address, --actors and --gpus-per-actor configure a cluster run; add --ray")
    if len(args.inputs) != 1:
        raise ValueError(f"--ray takes one input folder or URI, got {len(args.inputs)}; put the images under one")
    if PurePosixPath(str(args.output)).suffix:
        raise ValueError(f"-o {args.output}: --ray writes a folder (or URI prefix) keeping the input names; name a "
                         "folder")

    ray = _import_ray()
    if not args.verbose:  # Ray Data logs its progress every few seconds: that is what -v is for
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)

    def show(line: dict) -> None:
        if line["status"] == "written":
            print(f"{line['input']} -> {line['output']}: {'; '.join(line['critique']['suggestions']) or 'no edit'}",
                  flush=True)
        elif line["status"] == "failed":
            print(f"{PROG}: error: {line['error']}", file=sys.stderr, flush=True)

    summary = enhance_on_ray(
        str(args.inputs[0]), str(args.output), config, address=args.address, actors=args.actors or 1,
        gpus_per_actor=args.gpus_per_actor, overwrite=args.overwrite, skip_existing=args.skip_existing,
        report=None if args.report is None else str(args.report), on_line=show,
    )
    print(f"wrote {summary.report}")
    print(f"{PROG}: {summary.written} written, {summary.failed} failed, {summary.skipped} skipped", file=sys.stderr)
    return 1 if summary.failed else 0
