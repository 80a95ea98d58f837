"""The two artists behind ``roles.Artist``: the ``RuleArtist`` runs the critic's tone/colour suggestions with the
retouch operators; the ``DiffusionArtist`` edits with the Qwen-Image-Edit ``PhotoArtist`` conditioned on the neural
critic's H_c. Both return each image at its input size and dtype.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from spc_fast import retouch
from spc_fast.config import ArtistConfig
from spc_fast.critic.vocabulary import OPS, RESTORATION_OPS, TONE_OPS, CriticOutput
from spc_fast.executor import NEUTRAL_PARAMETERS, retouch_parameters
from spc_fast.images import as_image_list, from_unit_float, same_size_groups, to_unit_float
from spc_fast.roles import Images, Judgement


def _check_count(images: list[torch.Tensor], judgement: Judgement) -> None:
    if len(judgement) != len(images):
        raise ValueError(f"got {len(judgement)} critic answers for {len(images)} images; pass one per image")


class RuleArtist:
    """Executes tone/colour suggestions with ``retouch.apply`` (batched per image size, per-image parameters).

    Restoration, depth-of-field and bokeh suggestions are not executed (``EnhanceRecord.not_executed``). It edits
    at the input size, so ``last_full_res`` is "none" for every image.
    """

    executes = frozenset(TONE_OPS)

    def __init__(self) -> None:
        self.last_full_res: list[str] = []

    def edit(self, images: Images, judgement: Judgement) -> list[torch.Tensor]:
        image_list = as_image_list(images)
        _check_count(image_list, judgement)
        self.last_full_res = ["none"] * len(image_list)
        params = [retouch_parameters(o.suggestions)[0] for o in judgement.outputs]
        edited: list[torch.Tensor | None] = [
            image if p == NEUTRAL_PARAMETERS else None for image, p in zip(image_list, params, strict=True)
        ]
        for indices in same_size_groups(image_list, [i for i, e in enumerate(edited) if e is None]):
            batch = torch.stack([image_list[i] for i in indices])
            values = {op: torch.tensor([params[i][op] for i in indices], dtype=torch.float64) for op in TONE_OPS}
            for i, image in zip(indices, retouch.apply(batch, **values).unbind(0), strict=True):
                edited[i] = image
        return edited


def image_seed(image: torch.Tensor, seed: int) -> int:
    """A 63-bit seed from ``seed`` and the image's bytes (blake2b): distinct images get distinct noise."""
    data = image.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    digest = hashlib.blake2b(seed.to_bytes(8, "little", signed=True) + data, digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def full_res_method(output: CriticOutput, preferred: str) -> str:
    """How an edit made at the working size reaches the input size: ``preferred`` ("transfer" or "resize"), but
    "resize" when the critic asked for a restoration (deblur, denoise, dehaze...), which no colour transform
    reproduces."""
    return "resize" if any(s.op in RESTORATION_OPS for s in output.suggestions) else preferred


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _to_input_size(batch: torch.Tensor, out: torch.Tensor, methods: list[str]) -> torch.Tensor:
    """The working-size edits ``out`` [B, 3, h, w] in [0, 1] at the size of ``batch``, each by its method."""
    # imported here: spc_fast.artist loads diffusers, which the rule artist's users need not have
    from spc_fast.artist.upsample import upsample_edit

    full = torch.empty(batch.shape, dtype=torch.float32, device=batch.device)
    resize = [k for k, m in enumerate(methods) if m == "resize"]
    transfer = [k for k, m in enumerate(methods) if m == "transfer"]
    if resize:
        full[resize] = _resize(out[resize], batch.shape[-2:])
    if transfer:
        source = to_unit_float(batch[transfer])
        full[transfer] = upsample_edit(source, _resize(source, out.shape[-2:]), out[transfer])
    return full


class DiffusionArtist:
    """Edits with a ``PhotoArtist`` conditioned on the neural critic's H_c: images of one size go through the sampler
    as one batch (generated at about ``config.pixels``, sides multiples of 16) and come back at their input size and
    dtype. Each image's noise is seeded by ``image_seed(image, config.seed)``, so an image gets the same edit whatever
    batch or order it comes in. ``config`` defaults to the ``PhotoArtist``'s own.

    The input size is reached by ``config.full_res``: "transfer" fits the edit's local colour transform on the
    working-size pair and applies it to the full-size photo (``spc_fast.artist.upsample_edit``), "resize" resizes
    the edit (bicubic); restoration edits are always resized (``full_res_method``). ``last_full_res`` holds what
    the last ``edit`` did per image ("none" where the working size was the input size)."""

    executes = frozenset(OPS)  # the DiT edits whatever H_c asks for, restoration included

    def __init__(self, artist, config: ArtistConfig | None = None) -> None:
        self.artist = artist
        self.config = config or artist.config
        self.last_full_res: list[str] = []

    def edit(self, images: Images, judgement: Judgement) -> list[torch.Tensor]:
        image_list = as_image_list(images)
        _check_count(image_list, judgement)
        if judgement.hidden is None:
            raise ValueError(
                "the diffusion artist is conditioned on a neural critic's hidden states (H_c); pair it with the "
                "ImageCritic (spc-fast enhance --critic DIR --artist DIR)"
            )
        config = self.config
        edited: list[torch.Tensor | None] = [None] * len(image_list)
        methods = ["none"] * len(image_list)
        for indices in same_size_groups(image_list):
            group = judgement.select(indices)
            batch = torch.stack([image_list[i] for i in indices])
            out = self.artist.edit(
                batch,
                group.hidden,
                group.mask,
                num_steps=config.steps,
                guidance=config.guidance,
                target_pixels=config.pixels,
                generator=[torch.Generator().manual_seed(image_seed(image_list[i], config.seed)) for i in indices],
            ).images
            out = out.clamp(0, 1).to(batch.device)
            if out.shape[-2:] != batch.shape[-2:]:
                for i in indices:
                    methods[i] = full_res_method(judgement.outputs[i], config.full_res)
                out = _to_input_size(batch, out, [methods[i] for i in indices])
            out = from_unit_float(out, batch.dtype)
            for i, image in zip(indices, out.unbind(0), strict=True):
                edited[i] = image
        self.last_full_res = methods
        return edited
