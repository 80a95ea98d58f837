"""``spc-fast demo``: the whole job on a photo that needs it, on the CPU, with nothing to download.

A colour photo bundled with scikit-image is degraded by a seeded tone/colour perturbation (``perturbation``:
darker by 0.7–1.1 EV, saturation ×0.5–0.7 and a cool cast of 20–40 mired, each drawn uniformly by a torch
generator seeded with ``--seed``) and written as ``DIR/NAME_degraded.png``. That file is then enhanced as
``spc-fast enhance --rescore --report DIR/report.html`` would do it (the analytic critic and the rule artist, no
weights): ``DIR/NAME_enhanced.png``, ``DIR/NAME_before_after.png`` (degraded | enhanced, labelled with the critic's
scores) and the report page. Running the same demo again replaces the files an earlier one wrote (they come from the
seed, so they are written again exactly); any other file in the way is left alone unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from spc_fast import batch, batch_command, imagefiles, retouch
from spc_fast.batch_command import PROG
from spc_fast.config import PRESETS
from spc_fast.pipeline import Pipeline

# name -> file in scikit-image's data folder (the colour photos it ships in its wheel)
PHOTOS = {
    "chelsea": "chelsea.png",
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
}
DEFAULT_PHOTO = "chelsea"  # small (451×300), so the demo takes seconds; its degradations are undone reliably
DEFAULT_OUT = Path("spc-fast-demo")
# retouch parameter -> the range its perturbation is drawn from: a dim, washed-out, cool photo
PERTURBATION_RANGES = {"exposure": (-1.1, -0.7), "saturation": (0.5, 0.7), "temperature": (-40.0, -20.0)}
_PARAMETER_WORDS = {"exposure": "{:+.2f} EV", "saturation": "×{:.2f}", "temperature": "{:+.0f} mired"}
_LABEL_HEIGHT = 34
_GAP = 12


def perturbation(seed: int) -> dict[str, float]:
    """The retouch parameters that degrade the demo photo for ``seed``: one uniform draw per parameter from
    ``PERTURBATION_RANGES``, reproducible on every machine (a seeded CPU torch generator)."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.rand(len(PERTURBATION_RANGES), generator=generator, dtype=torch.float64).tolist()
    ranges = PERTURBATION_RANGES.items()
    return {name: low + (high - low) * u for (name, (low, high)), u in zip(ranges, draws, strict=True)}


def bundled_photo(name: str) -> Path:
    """The path of scikit-image's bundled photo ``name`` (a key of ``PHOTOS``)."""
    if name not in PHOTOS:
        raise ValueError(f"--photo {name}: unknown; choose one of {', '.join(PHOTOS)}")
    try:
        import skimage.data
    except ImportError:
        raise ValueError(
            "the demo photos come with scikit-image: pip install scikit-image (or pip install -e '.[dev]')"
        ) from None
    path = Path(skimage.data.__file__).parent / PHOTOS[name]
    if not path.is_file():
        raise ValueError(f"{path}: scikit-image's bundled photo is missing; reinstall scikit-image")
    return path


def side_by_side(before: torch.Tensor, after: torch.Tensor, labels: tuple[str, str]) -> np.ndarray:
    """Two (3, H, W) uint8 images of one size next to each other on white, each under its label: H x W x 3."""
    height, width = before.shape[1:]
    canvas = Image.new("RGB", (2 * width + _GAP, height + _LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    font = _label_font(_LABEL_HEIGHT * 3 // 5)
    for column, (image, label) in enumerate(zip((before, after), labels, strict=True)):
        left = column * (width + _GAP)
        canvas.paste(Image.fromarray(image.permute(1, 2, 0).numpy()), (left, _LABEL_HEIGHT))
        draw.text((left + 4, _LABEL_HEIGHT // 2), label, fill=(29, 35, 43), font=font, anchor="lm")
    return np.asarray(canvas)


def _label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's own scalable font where FreeType is available
    except (TypeError, OSError):  # an old Pillow, or one built without FreeType: the small bitmap font
        return ImageFont.load_default()


def _score(value: object) -> str:
    return "?" if not isinstance(value, (int, float)) or value != value else f"{value:.0f}"


def _outputs(out: Path, name: str) -> dict[str, Path]:
    return {
        "degraded": out / f"{name}_degraded.png",
        "enhanced": out / f"{name}_enhanced.png",
        "side_by_side": out / f"{name}_before_after.png",
        "report": out / "report.html",
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"folder for the demo's files (default {DEFAULT_OUT}; created if missing)",
    )
    parser.add_argument(
        "--photo",
        choices=tuple(PHOTOS),
        default=DEFAULT_PHOTO,
        help=f"scikit-image's bundled photo to degrade and enhance (default {DEFAULT_PHOTO})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the perturbation (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier demo in DIR")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spc-fast demo``; returns the exit status. Bad input raises ValueError with the fix."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    # One photo of this size gains nothing from more threads, and threads that wait for each other on a busy
    # machine cost seconds (measured on the 2-core CI machine with its cores busy: 1.7 s on one thread, 29-47 s
    # on two).
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    source = bundled_photo(args.photo)
    paths = _outputs(args.out, args.photo)
    existing = [str(path) for path in paths.values() if path.exists() or path.is_symlink()]
    # an earlier demo of this photo left its report beside its images: a rerun replaces what it wrote
    overwrite = args.overwrite or (bool(existing) and paths["report"].is_file() and _written_by_demo(paths["report"]))
    if existing and not overwrite:
        raise ValueError(
            f"{', '.join(existing)} already exist; pass --overwrite to replace them, or choose another --out folder"
        )
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out}: is a file; choose a folder")
    args.out.mkdir(parents=True, exist_ok=True)

    settings = perturbation(args.seed)
    degraded = retouch.apply(imagefiles.load_tensor(source), **settings)
    imagefiles.save_image(paths["degraded"], degraded, overwrite=overwrite)
    described = ", ".join(f"{name} {_PARAMETER_WORDS[name].format(value)}" for name, value in settings.items())
    print(f"{args.photo} (bundled with scikit-image), degraded with seed {args.seed}: {described}")
    print(f"  wrote {paths['degraded']}")

    config = dataclasses.replace(PRESETS["analytic"], rescore=True)
    plan = batch.plan_batch([paths["degraded"]], paths["enhanced"], overwrite=overwrite, report=paths["report"])
    pipeline = Pipeline.from_config(config)
    result = batch.run_batch(plan, pipeline)
    if result.failures:
        raise ValueError(result.failures[0].error)
    record = result.written[0]
    before, after = _score(record["critique"]["score"]), _score(record["score_after"])
    print(f"critic's score: {before} before, {after} after the edit")
    print(f"  edits: {'; '.join(record['critique']['suggestions']) or 'none'}")
    print(f"  wrote {paths['enhanced']}")

    labels = (f"before: degraded, score {before}", f"after: enhanced, score {after}")
    pair = side_by_side(degraded, imagefiles.load_tensor(paths["enhanced"]), labels)
    imagefiles.save_image(paths["side_by_side"], pair, overwrite=overwrite)
    print(f"  wrote {paths['side_by_side']} (before | after)")
    report = {"version": batch_command.version(), **batch_command.describe(pipeline, config), **result.to_json()}
    batch_command.write_report(paths["report"], report, overwrite=overwrite)
    print(f"  wrote {paths['report']} (open it in a browser)")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _written_by_demo(report: Path) -> bool:
    """Whether ``report`` is a page an earlier ``spc-fast demo`` wrote (it names its degraded input)."""
    head = report.read_text(encoding="utf-8", errors="replace")[:200_000]
    return "_degraded.png" in head and "spc-fast" in head


if __name__ == "__main__":
    sys.exit(main())
