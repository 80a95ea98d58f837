"""Stage II, reasoning-conditioned adaptation (``spc-fast train adapt``): the artist learns to follow the frozen
critic's own reasoning. Each input is judged by the critic (greedy, as at inference), the artist is conditioned on
that answer's H_c (prompt states and every decode step's, SPEC.md eq. 1) and trained by the same flow matching as
stage I (``ArtistSFT``: only ``conditioning`` and ``targets`` differ).

Targets are made online from what the critic said:
- retouch (and score-only) records: the critic's tone/colour suggestions executed by the rule executor
  (``RuleArtist``: ``executor.retouch_parameters`` then ``retouch.apply``) on the input at the working size, so the
  artist learns to carry out its critic's edit (an answer with no tone/colour suggestion asks for the input itself);
- restoration records, stacks included (a degradation under a retouch: the record's task is ``restore``): the clean
  target, which undoes both and which no rule can produce.

Generating H_c is the expensive part, so answers and H_c are cached on disk per (image, critic) in
``DATA/.hc-cache/`` (``hc_cache.HcCache``; ``RUN/hc-cache/`` when the records come from no data folder) and reused
across epochs and runs; ``hc_cache=false`` generates them at every step.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

import torch

from spc_fast.artists import RuleArtist
from spc_fast.critic.format import parse
from spc_fast.roles import Judgement
from spc_fast.training.config import TrainConfig
from spc_fast.training.data.manifest import Record
from spc_fast.training.stage import StepLoss
from spc_fast.training.stages.artist_sft import ArtistSFT
from spc_fast.training.stages.hc_cache import CACHE_DIR, CachedHc, HcCache, critic_fingerprint, image_key

RESTORATION_TASK = "restore"


def is_restoration(record: Record) -> bool:
    """A record whose target is the clean image: a restoration pair or a stack (degradation + retouch)."""
    return record.task == RESTORATION_TASK or bool(record.degradations)


def cache_root(config: TrainConfig) -> Path:
    """``DATA/.hc-cache`` (DATA: the folder of the manifest), else ``RUN/hc-cache``."""
    if config.data is not None:
        data = Path(config.data)
        return (data if data.is_dir() else data.parent) / CACHE_DIR
    if config.out is None:
        raise ValueError("the H_c cache needs a data folder or a run folder: set data or out (or hc_cache=false)")
    return Path(config.out) / "hc-cache"


def padded(entries: list[CachedHc]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of H_c [S_i, D] right-padded with zeros: hidden [B, S, D] and mask [B, S] (1 on real rows)."""
    length = max(e.hidden.shape[0] for e in entries)
    width, dtype = entries[0].hidden.shape[1], entries[0].hidden.dtype
    hidden = torch.zeros((len(entries), length, width), dtype=dtype)
    mask = torch.zeros((len(entries), length), dtype=torch.long)
    for row, entry in enumerate(entries):
        n = entry.hidden.shape[0]
        hidden[row, :n], mask[row, :n] = entry.hidden.cpu(), 1
    return hidden, mask


class Adapt(ArtistSFT):
    """Stage II (see the module docstring)."""

    name = "adapt"

    def build(self, config: TrainConfig, device: torch.device) -> None:
        super().build(config, device)
        self.rule_artist = RuleArtist()
        self.cache = HcCache(cache_root(config), critic_fingerprint(self.critic)) if config.hc_cache else None

    def bucket(self, record: Record) -> Hashable:
        if is_restoration(record) and record.target is None:
            raise ValueError(
                f"record {record.id!r} is a restoration record without a target: adapt trains "
                "restoration towards the clean image; give it one or leave it out"
            )
        return self.sizes(record)[0]

    def sample(self, record: Record) -> dict:
        """The artist's source, the critic's view and its cache key, the input at the working size (the rule
        executor's canvas) and the target known in advance: the clean image for restoration, else the input (a
        placeholder that ``targets`` replaces with the executed suggestions)."""
        self.bucket(record)
        sample = self.common(record)
        restore = is_restoration(record)
        working = self.working(record.input, sample["size"])
        target = self.working(record.target, sample["size"]) if restore else working
        return {
            **sample,
            "key": image_key(sample["critic_image"]),
            "working": working,
            "target": target,
            "restore": torch.tensor(restore),
        }

    def judge(self, batch: dict) -> list[CachedHc]:
        """Each image's greedy answer and H_c rows: from the cache, else generated (for the misses together) and
        stored."""
        keys = batch["key"]
        entries = [self.cache.load(key) if self.cache is not None else None for key in keys]
        misses = [i for i, entry in enumerate(entries) if entry is None]
        if misses:
            judgement = self.critic.sample([batch["critic_image"][i] for i in misses], temperature=0.0).judgement
            for row, i in enumerate(misses):
                length = int(judgement.mask[row].sum())
                entries[i] = CachedHc(judgement.hidden[row, :length].detach().cpu(), judgement.texts[row])
                if self.cache is not None:
                    self.cache.store(keys[i], entries[i].hidden, entries[i].text)
        self.generated = len(misses)
        return entries

    def conditioning(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """H_c [B, L, D], its mask [B, L] and the answers the targets are made from."""
        entries = self.judge(batch)
        hidden, mask = padded(entries)
        return hidden, mask, [entry.text for entry in entries]

    def targets(self, batch: dict, judged: tuple) -> torch.Tensor:
        """The clean image for restoration records, the critic's tone/colour edit executed on the input for the
        others: [B, 3, h, w] in [0, 1]."""
        texts = judged[2]
        judgement = Judgement(texts=list(texts), outputs=[parse(text) for text in texts])
        executed = torch.stack(self.rule_artist.edit(batch["working"], judgement)).to(batch["target"].device)
        restore = batch["restore"].to(batch["target"].device).view(-1, 1, 1, 1)
        return torch.where(restore, batch["target"], executed.to(batch["target"].dtype))

    def loss(self, model: torch.nn.Module, batch: dict) -> StepLoss:
        out = super().loss(model, batch)
        out.terms["hc_generated"] = torch.tensor(float(self.generated))
        return out
