"""Fixed-noise evaluation of stage III artists on a data directory: the same edits before and after training.

Stage III's training curve is noisy (new answers, noise and records every step); here only the artist changes. The
critic answers each input photo once (the full-size photo, as ``training/joint.py``'s ``sample()`` shows it, at
``--temperature``, its generator seeded ``--critic-seed``); every artist edits every record with that same H_c at
the record's training size (``output_size(height, width, pixels)``, records batched by size as training buckets
them), once per seed k from ``torch.Generator().manual_seed(k)`` per image (the same noise for every artist), in
``--steps`` sampler steps from the photo noised to time ``--strength`` (``artist.strength``; 1: pure noise, as the
release and the stage III presets). Rewards (``spc_fast.rewards.artist``) against the record's target at that size:

- ``r_photo``: photometric control (eq. 10-12).
- ``r_PA`` with λ_perc = 0: r_comp · r_photo, r_comp the compliance with the critic's own tone/colour suggestions
  (1 when it made none, or its answer did not parse).

Per method: both rewards' means over records and seeds, the mean over records of the std over seeds (Bessel's;
0 with one seed) and of the best seed's reward, and the number of records. Baselines in the same run: ``identity``
(the input unchanged) and ``vae round trip`` (the first artist's VAE, decode(encode(x))), deterministic, so their
std is 0. Records without a target are left out.

``python -m spc_fast.bench.stage3_eval --data DIR --critic DIR --artist NAME=DIR [--artist NAME=DIR ...]
[--steps 2] [--strength 1] [--pixels 4096] [--seeds 4] [--json FILE]`` (a model directory may be ``tiny``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from spc_fast.config import TINY, ArtistConfig, CriticConfig
from spc_fast.images import output_size, resize_bicubic, to_unit_float
from spc_fast.models import load_artist, load_critic
from spc_fast.rewards.artist import (
    compliance_from_attributes,
    measure,
    photometric_control_from_attributes,
    suggestion_tensor,
)
from spc_fast.training.data.manifest import Record, load_image, read_manifest
from spc_fast.training.joint_config import TINY_ANSWER_TOKENS

BASELINES = ("identity", "vae round trip")


@dataclass(frozen=True)
class MethodRow:
    """One method's rewards (means over records; std and best over seeds); ``*_by_seed``: [seed][record]."""

    method: str
    r_pa: float
    r_photo: float
    std_pa: float
    std_photo: float
    best_pa: float
    best_photo: float
    n: int
    ids: tuple[str, ...]
    r_pa_by_seed: tuple[tuple[float, ...], ...]
    r_photo_by_seed: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class _Chunk:
    """Records of one working size with the critic's answer: inputs and targets [b, 3, h, w] at that size."""

    ids: list[str]
    size: tuple[int, int]
    x: torch.Tensor
    gt: torch.Tensor
    hidden: torch.Tensor
    mask: torch.Tensor
    counts: torch.Tensor  # suggestion_tensor of the parsed answers


def _unit(image, size: tuple[int, int]) -> torch.Tensor:
    return to_unit_float(torch.from_numpy(resize_bicubic(image, size)).permute(2, 0, 1))


def edit_rewards(x: torch.Tensor, edit: torch.Tensor, gt: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[2, B]: r_PA (λ_perc = 0: r_comp · r_photo, suggestions as ``suggestion_tensor`` counts) and r_photo."""
    a_x, a_edit, a_gt = measure(x, edit, gt)
    r_photo = photometric_control_from_attributes(a_x, a_edit, a_gt)
    return torch.stack([compliance_from_attributes(a_x, a_edit, counts) * r_photo, r_photo])


def paired_records(data: str | Path, pixels: int) -> dict[tuple[int, int], list[Record]]:
    """The manifest's records with a target, by working size (sorted)."""
    records, _ = read_manifest(data)
    groups = defaultdict(list)
    for record in records:
        if record.target is not None:
            groups[output_size(record.height, record.width, pixels)].append(record)
    if not groups:
        raise ValueError(
            f"{data}: none of its {len(records)} records has a target; stage III is judged against targets: "
            "build input/target pairs with spc-fast data build"
        )
    return dict(sorted(groups.items()))


def parse_artists(values: list[str]) -> dict[str, str]:
    """``NAME=DIR`` values as {name: directory}, in order; ValueError naming a malformed or repeated one."""
    artists: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ValueError(f"--artist {value!r}: expected NAME=DIR, e.g. --artist trained=runs/joint/final")
        if name in artists:
            raise ValueError(f"--artist {value!r}: the name {name!r} is given twice; give each artist its own name")
        artists[name] = path
    return artists


def _check_models(critic_dir: str | Path, artists: dict[str, str | Path]) -> None:
    if not artists:
        raise ValueError("no artist to evaluate: pass --artist NAME=DIR (a stage II or III export, or tiny)")
    if taken := set(artists) & set(BASELINES):
        raise ValueError(f"artist name {taken.pop()!r} is a baseline's (one of {BASELINES}); give it another name")
    for role, path in [("critic", critic_dir), *((f"artist {n!r}", p) for n, p in artists.items())]:
        if str(path) != TINY and not Path(path).is_dir():
            raise ValueError(f"{role} directory {path} does not exist; pass a model directory (RUN/final) or tiny")


@torch.no_grad()
def evaluate(
    data: str | Path,
    critic_dir: str | Path,
    artists: dict[str, str | Path],
    *,
    steps: int = 2,
    strength: float = 1.0,
    pixels: int = 64 * 64,
    seeds: int = 4,
    temperature: float = 1.0,
    critic_seed: int = 0,
    max_new_tokens: int = TINY_ANSWER_TOKENS,
    batch: int = 8,
    device: str = "cpu",
) -> dict[str, MethodRow]:
    """{method: row}: the baselines, then ``artists`` in order (module docstring). ``batch``: records per critic
    call and per edit (the critic's draws depend on it; each record's edit noise does not)."""
    _check_models(critic_dir, artists)
    if seeds < 1 or batch < 1:
        raise ValueError(f"need seeds >= 1 and batch >= 1, got {seeds} and {batch}")
    groups = paired_records(data, pixels)
    critic = load_critic(critic_dir, CriticConfig(max_new_tokens=max_new_tokens, device=device, dtype="float32"))
    chunks = []
    for size, records in groups.items():
        for start in range(0, len(records), batch):
            part = records[start : start + batch]
            photos = [load_image(r.input).permute(1, 2, 0).numpy() for r in part]
            targets = [load_image(r.target).permute(1, 2, 0).numpy() for r in part]
            generator = torch.Generator(device=critic.model.device).manual_seed(critic_seed)
            judgement = critic.sample(photos, num_samples=1, temperature=temperature, generator=generator).judgement
            x, gt = (torch.stack([_unit(a, size) for a in arrays]) for arrays in (photos, targets))
            counts = suggestion_tensor([o.suggestions for o in judgement.outputs])
            chunks.append(_Chunk([r.id for r in part], size, x, gt, judgement.hidden, judgement.mask, counts))
    del critic  # the artists load one at a time after it
    scores = {"identity": [edit_rewards(c.x, c.x, c.gt, c.counts)[:, None] for c in chunks]}  # [2, 1, b] each
    config = ArtistConfig(device=device, dtype="float32", steps=steps, pixels=pixels, strength=strength)
    for index, (name, path) in enumerate(artists.items()):
        artist = load_artist(path, config)
        if index == 0:
            scores["vae round trip"] = [
                edit_rewards(c.x, artist.decode(artist.encode(c.x)).cpu(), c.gt, c.counts)[:, None] for c in chunks
            ]
        per_chunk = []
        for c in chunks:
            draws = []
            for k in range(seeds):
                generators = [torch.Generator().manual_seed(k) for _ in c.ids]
                edit = artist.edit(c.x, c.hidden, c.mask, num_steps=steps, size=c.size, generator=generators)
                draws.append(edit_rewards(c.x, edit.images.cpu(), c.gt, c.counts))
            per_chunk.append(torch.stack(draws, 1))  # [2, seeds, b]
        scores[name] = per_chunk
        del artist
    ids = tuple(i for c in chunks for i in c.ids)
    return {method: _row(method, ids, torch.cat(parts, -1)) for method, parts in scores.items()}


def _row(method: str, ids: tuple[str, ...], rewards: torch.Tensor) -> MethodRow:
    # rewards [2 (r_PA, r_photo), seeds, records]
    std = rewards.std(1) if rewards.shape[1] > 1 else torch.zeros_like(rewards[:, 0])
    mean, best = rewards.mean((1, 2)), rewards.max(1).values.mean(1)
    by_seed = [tuple(map(tuple, r.tolist())) for r in rewards]
    return MethodRow(method, *mean.tolist(), *std.mean(1).tolist(), *best.tolist(), len(ids), ids, *by_seed)


def markdown_table(rows: dict[str, MethodRow]) -> str:
    """method | r_PA | r_photo | std over seeds | best of seeds | n; the last two as r_PA / r_photo."""
    lines = [
        "| method | r_PA | r_photo | std over seeds (r_PA / r_photo) | best of seeds (r_PA / r_photo) | n |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        lines.append(
            f"| {r.method} | {r.r_pa:.3f} | {r.r_photo:.3f} | {r.std_pa:.4f} / {r.std_photo:.4f} "
            f"| {r.best_pa:.3f} / {r.best_photo:.3f} | {r.n} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spc_fast.bench.stage3_eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="a data directory (spc-fast data build)")
    parser.add_argument("--critic", required=True, help="the critic's directory (release layout, or tiny)")
    parser.add_argument("--artist", action="append", default=[], metavar="NAME=DIR", help="repeat per artist")
    parser.add_argument("--steps", type=int, default=2, help="sampler steps (default 2)")
    parser.add_argument("--strength", type=float, default=1.0, help="artist.strength (default 1: noise)")
    parser.add_argument("--pixels", type=int, default=64 * 64, help="working size in pixels (default 4096)")
    parser.add_argument("--seeds", type=int, default=4, help="edits per record, seeds 0..N-1 (default 4)")
    parser.add_argument("--temperature", type=float, default=1.0, help="the critic's (default 1)")
    parser.add_argument("--critic-seed", type=int, default=0, help="the critic's generator seed (default 0)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=TINY_ANSWER_TOKENS, help="the critic's answer budget (default 48)"
    )
    parser.add_argument("--device", default="cpu", help="default cpu")
    parser.add_argument("--json", metavar="FILE", help="write the config and every row as JSON")
    args = parser.parse_args(argv)
    try:
        artists = parse_artists(args.artist)
        options = dict(steps=args.steps, strength=args.strength, pixels=args.pixels, seeds=args.seeds)
        options.update(temperature=args.temperature, critic_seed=args.critic_seed, device=args.device)
        rows = evaluate(args.data, args.critic, artists, max_new_tokens=args.max_new_tokens, **options)
    except ValueError as error:
        parser.error(str(error))
    print("  ".join(f"{key}: {value}" for key, value in vars(args).items() if key != "json"), end="\n\n")
    print(markdown_table(rows))
    if args.json:
        payload = {"config": vars(args), "rows": [dataclasses.asdict(r) for r in rows.values()]}
        Path(args.json).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
