"""How much of a known tone/colour perturbation the enhancer undoes (quality, not speed).

The bundled photographs are taken as the aesthetic references (as the paper's degraded-AVA pairs assume):
each is perturbed with known retouch settings (under/over-exposure, flat/harsh contrast, washed-out and
over-saturated colour, warm and cool casts, and combinations), the enhancer (``Pipeline()``: analytic critic
+ rule executor) edits the perturbed image, and we report, on the attributes the perturbation moved
(by at least ``MOVED``, twice the reward tolerances τ), the fraction of the move it undoes,
``1 - |a(X_e) - a(X_gt)| / |a(X) - a(X_gt)|`` (CCT in mired): 1 = back to the original, 0 = no change,
negative = moved further away (overshooting past the original counts against it), and the PSNR gain
``PSNR(X_e, X_gt) - PSNR(X, X_gt)``. A moved attribute counts as "moved further away" when the edit leaves it
farther from the original than the perturbation did by more than the reward tolerance τ (a fraction of
-0.01 on an attribute the enhancer left alone is measurement noise, not a move). Unperturbed photos are
enhanced too: they should come back untouched (PSNR against the original: infinite).

``python -m spc_fast.bench.enhance_quality [--size PX] [--json FILE]``; the small regression version runs in
tests/test_pipeline.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from spc_fast import photometric, retouch, rewards
from spc_fast.critic.format import suggestion_phrase
from spc_fast.pipeline import Pipeline

REFERENCES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
HELD_OUT = ("motorcycle_left.png",)
PERTURBATIONS: dict[str, dict[str, float]] = {
    "under-exposed": {"exposure": -1.0},
    "over-exposed": {"exposure": 1.0},
    "flat": {"contrast": 0.6},
    "harsh": {"contrast": 1.5},
    "washed-out": {"saturation": 0.5},
    "over-saturated": {"saturation": 1.7},
    "warm cast": {"temperature": 40.0},
    "cool cast": {"temperature": -40.0},
    "dark + flat": {"exposure": -0.8, "contrast": 0.7},
    "bright + washed-out": {"exposure": 0.7, "saturation": 0.6},
    "warm + over-saturated": {"temperature": 30.0, "saturation": 1.4},
    "cool + dark": {"temperature": -30.0, "exposure": -0.7},
    "flat + washed-out": {"contrast": 0.7, "saturation": 0.6},
}
MOVED = tuple(2.0 * t for t in rewards.DEFAULT_TAU)  # L*, L*, C*, mired


@dataclass
class Case:
    photo: str
    perturbation: str
    moved: list[str]
    undone: dict[str, float]  # per moved attribute
    mean_undone: float | None
    further_away: list[str]  # moved attributes ending farther from the original than the perturbation left them
    psnr_perturbed: float
    psnr_enhanced: float
    psnr_gain: float
    suggestions: list[str]


def load_photos(names: tuple[str, ...] = REFERENCES, size: int | None = None) -> dict[str, torch.Tensor]:
    """scikit-image's bundled photos through ``imagefiles.load_tensor``, optionally area-resized to ``size`` px on the
    long side; float32 in [0, 1]."""
    import skimage.data

    from spc_fast.imagefiles import load_tensor

    folder = Path(skimage.data.__file__).parent
    photos = {}
    for name in names:
        image = load_tensor(folder / name).float() / 255.0
        if size is not None:
            scale = size / max(image.shape[-2:])
            shape = (round(image.shape[1] * scale), round(image.shape[2] * scale))
            image = torch.nn.functional.interpolate(image[None], size=shape, mode="area")[0].clamp(0, 1)
        photos[name] = image
    return photos


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def evaluate(
    photos: dict[str, torch.Tensor],
    perturbations: dict[str, dict[str, float]] | None = None,
    pipeline: Pipeline | None = None,
) -> list[Case]:
    """One ``Case`` per photo and perturbation (default PERTURBATIONS; "none": the photo itself)."""
    perturbations = PERTURBATIONS if perturbations is None else perturbations
    pipeline = pipeline or Pipeline(rescore=False)
    cases = []
    for photo, reference in photos.items():
        settings = {"none": {}, **perturbations}
        perturbed = [retouch.apply(reference, **p) if p else reference for p in settings.values()]
        result = pipeline.enhance(perturbed)
        a = rewards.to_mired(photometric.attributes(torch.stack([reference, *perturbed, *result.images])))
        n = len(perturbed)
        a_gt, a_x, a_e = a[0], a[1 : n + 1], a[n + 1 :]
        for j, name in enumerate(settings):
            move = a_x[j] - a_gt
            moved = [k for k in range(4) if abs(float(move[k])) >= MOVED[k]]
            undone = {
                photometric.ATTRIBUTE_NAMES[k]: 1.0 - abs(float(a_e[j, k] - a_gt[k])) / abs(float(move[k]))
                for k in moved
            }
            farther = [
                photometric.ATTRIBUTE_NAMES[k]
                for k in moved
                if abs(float(a_e[j, k] - a_gt[k])) - abs(float(move[k])) > rewards.DEFAULT_TAU[k]
            ]
            before, after = psnr(perturbed[j], reference), psnr(result.images[j], reference)
            record = result.records[j]
            cases.append(
                Case(
                    photo=photo,
                    perturbation=name,
                    moved=list(undone),
                    undone=undone,
                    mean_undone=sum(undone.values()) / len(undone) if undone else None,
                    further_away=farther,
                    psnr_perturbed=before,
                    psnr_enhanced=after,
                    psnr_gain=after - before if math.isfinite(before) else math.nan,
                    suggestions=[suggestion_phrase(s) for s in record.critique.suggestions],
                )
            )
    return cases


@dataclass
class Summary:
    mean_undone: float
    moved_further_away: list[str]  # "photo / perturbation: attribute fraction" ending farther away by > tau
    mean_psnr_gain: float
    per_perturbation: dict[str, dict[str, float]]  # name -> mean undone, mean PSNR gain
    unperturbed: dict[str, dict[str, object]]  # photo -> PSNR of the enhanced original, suggestions


def summarize(cases: list[Case]) -> Summary:
    """Averages over the perturbed cases (cases whose perturbation moved no attribute are left out of the
    fraction undone) and the unperturbed photos."""
    perturbed = [c for c in cases if c.perturbation != "none"]
    scored = [c for c in perturbed if c.mean_undone is not None]
    per: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(c.perturbation for c in perturbed):
        group = [c for c in perturbed if c.perturbation == name]
        undone = [c.mean_undone for c in group if c.mean_undone is not None]
        per[name] = {
            "mean_undone": sum(undone) / len(undone) if undone else math.nan,
            "mean_psnr_gain": sum(c.psnr_gain for c in group) / len(group),
        }
    return Summary(
        mean_undone=sum(c.mean_undone for c in scored) / len(scored),
        moved_further_away=[
            f"{c.photo} / {c.perturbation}: {k} {c.undone[k]:+.2f}" for c in scored for k in c.further_away
        ],
        mean_psnr_gain=sum(c.psnr_gain for c in perturbed) / len(perturbed),
        per_perturbation=per,
        unperturbed={
            c.photo: {"psnr": c.psnr_enhanced, "suggestions": c.suggestions} for c in cases if c.perturbation == "none"
        },
    )


def format_report(cases: list[Case], summary: Summary) -> str:
    photos = list(dict.fromkeys(c.photo for c in cases))
    header = "".join(f"{p.split('.')[0][:10]:>12}" for p in photos)
    lines = [f"{'perturbation':<24}{header}{'mean':>8}{'dPSNR':>8}"]
    for name, stats in summary.per_perturbation.items():
        cells = []
        for photo in photos:
            case = next(c for c in cases if c.photo == photo and c.perturbation == name)
            cells.append(f"{'-' if case.mean_undone is None else format(case.mean_undone, '.0%'):>12}")
        lines.append(f"{name:<24}" + "".join(cells) + f"{stats['mean_undone']:>8.0%}{stats['mean_psnr_gain']:>+8.1f}")
    lines.append(f"mean fraction undone {summary.mean_undone:.1%}, mean PSNR gain {summary.mean_psnr_gain:+.2f} dB")
    lines.append(f"moved further away: {summary.moved_further_away or 'none'}")
    for photo, info in summary.unperturbed.items():
        state = "untouched" if math.isinf(info["psnr"]) else f"PSNR {info['psnr']:.1f} dB, {info['suggestions']}"
        lines.append(f"unperturbed {photo}: {state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spc_fast.bench.enhance_quality", description=__doc__)
    parser.add_argument("--size", type=int, default=None, help="resize photos to this long side (default: as bundled)")
    parser.add_argument("--held-out", action="store_true", help="also report the held-out photo separately")
    parser.add_argument("--json", metavar="FILE", help="write every case and the summary as JSON")
    args = parser.parse_args(argv)
    from spc_fast.bench.harness import environment

    env = environment(torch.device("cpu"))
    print(f"device: {env['device']}  commit: {env['git_commit']}  size: {args.size or 'as bundled'}")
    sets = {"references": REFERENCES, **({"held out": HELD_OUT} if args.held_out else {})}
    payload = {"environment": env, "config": vars(args), "sets": {}}
    for label, names in sets.items():
        cases = evaluate(load_photos(names, args.size))
        summary = summarize(cases)
        print(f"\n== {label}: fraction of the move undone (attributes moved by the perturbation) ==")
        print(format_report(cases, summary))
        payload["sets"][label] = {"cases": [asdict(c) for c in cases], "summary": asdict(summary)}
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
