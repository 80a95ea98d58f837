"""Batched generation for the Qwen2.5-VL critic the gpt-fast way: a static KV cache (fixed shapes), a one-token
decode step that ``torch.compile(fullgraph=True)`` captures once, sampling on the device without a host sync per
token, the last-layer state of every position kept for H_c (SPEC.md eq. 1 and §6: prompt + generated - 1 rows), and
each sampled token's log-probability kept for the RL trainer.

The prompt is left-padded to a multiple of ``bucket`` tokens so prefill shapes repeat across batches, and the
cache holds ``prompt + max_new_tokens`` positions, so the decode step sees one shape per (batch, bucket).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from transformers import StaticCache

# How often (in decode steps) the loop asks the device whether every sample has stopped: a host sync.
STOP_CHECK_EVERY = 8


@dataclass
class Generation:
    tokens: torch.Tensor  # [B, T] generated ids, pad after each sample's stop token
    lengths: torch.Tensor  # [B] generated tokens per sample, stop token included
    logprobs: torch.Tensor  # [B, T] float32 log_softmax(logits / temperature)[token] (greedy: temperature 1), 0 on pad
    hidden: torch.Tensor  # [B, S, D] H_c: prompt states, then one per generated token but the last; right-padded
    mask: torch.Tensor  # [B, S] 1 for real positions
    prompt_lengths: torch.Tensor  # [B] real (unpadded) prompt tokens


def decode_step(model, token: torch.Tensor, position: torch.Tensor, mask: torch.Tensor, cache: StaticCache):
    """One token per sample through the language model: (last-layer state [B, D], logits [B, V] float32)."""
    out = model.model(input_ids=token, attention_mask=mask, position_ids=position, cache=cache, use_cache=True)
    state = out.last_hidden_state[:, -1]  # [B, D]
    return state, model.lm_head(state).float()


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row: argmax when ``temperature == 0``, else nucleus sampling by the exponential-race trick
    (argmax of p / E with E ~ Exp(1) draws from p) so no multinomial host sync is needed."""
    if temperature == 0.0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the top token always stays)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    race = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / race).argmax(-1)


def sampled_logprob(logits: torch.Tensor, token: torch.Tensor, temperature: float) -> torch.Tensor:
    """[B] float32 log-probability of ``token`` under log_softmax(logits / temperature), temperature 1 when greedy
    (the distribution the RL losses score tokens under; the nucleus cut is not part of it)."""
    scaled = logits.float() / temperature if temperature > 0 else logits.float()
    return torch.log_softmax(scaled, dim=-1).gather(-1, token[:, None])[:, 0]


def bucket_left_pad(inputs: dict, multiple: int, pad_id: int) -> dict:
    """Left-pad ``input_ids``/``attention_mask``/``mm_token_type_ids`` to a multiple of ``multiple`` tokens."""
    length = inputs["input_ids"].shape[1]
    extra = -length % multiple
    if extra == 0:
        return dict(inputs)
    out = dict(inputs)
    fills = {"input_ids": pad_id, "attention_mask": 0, "mm_token_type_ids": 0}
    for key, fill in fills.items():
        if key in inputs:
            x = inputs[key]
            out[key] = torch.cat([x.new_full((x.shape[0], extra), fill), x], dim=1)
    return out


class StaticGenerator:
    """Greedy or sampled generation with a static cache; ``compile=True`` compiles the decode step once per
    (batch, cache length) shape. ``stop_ids`` end a sample (the stop token is kept as its last token).

    ``stop_group``: a process group whose ranks stop decoding together, for a model whose every forward is a
    collective (FSDP all-gathers each block's weights per decode step: a rank that stopped early would leave the
    others waiting on a gather it never joins). None: each process stops when its own samples have."""

    def __init__(
        self,
        model,
        *,
        stop_ids: list[int],
        pad_id: int,
        compile: bool = False,
        backend: str = "inductor",
        mode: str | None = None,
    ) -> None:
        self.model = model
        self.stop_ids = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)
        self.pad_id = pad_id
        self.stop_group: dist.ProcessGroup | None = None
        self.step = decode_step
        self._caches: dict[tuple, StaticCache] = {}
        if compile:
            self.step = torch.compile(decode_step, fullgraph=True, backend=backend, mode=mode)

    def _cache(self, batch: int, total: int, device: torch.device) -> StaticCache:
        """One static cache per (batch, length, device), reset between calls: its tensors keep their addresses,
        so CUDA graphs recorded for the decode step are replayed, not recorded again for every batch."""
        key = (batch, total, device)
        cache = self._caches.get(key)
        if cache is None:
            cache = self._caches[key] = StaticCache(config=self.model.config, max_cache_len=total)
        else:
            cache.reset()
        return cache

    @torch.no_grad()  # not inference_mode: rollouts feed a teacher-forced forward with gradients later
    def __call__(
        self,
        inputs: dict,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Generation:
        model = self.model
        ids, attention = inputs["input_ids"], inputs["attention_mask"]
        batch, prompt_len = ids.shape
        device = ids.device
        total = prompt_len + max_new_tokens
        positions, rope_deltas = model.model.get_rope_index(
            ids,
            mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs.get("image_grid_thw"),
            attention_mask=attention,
        )  # [3, B, L], [B, 1]
        cache = self._cache(batch, total, device)
        # The prefill takes the prompt's own [B, L] mask: under flash-attn transformers unpads queries and keys by
        # it (a cache-length mask would misalign them); under SDPA it is padded to the cache length. Decode steps
        # take a cache-length mask whose future slots the causal mask from the cache position hides (SDPA).
        mask = torch.cat([attention, attention.new_ones(batch, max_new_tokens)], dim=1)  # [B, L + T]
        prefill = model.model(
            input_ids=ids,
            attention_mask=attention,
            position_ids=positions,
            pixel_values=inputs.get("pixel_values"),
            image_grid_thw=inputs.get("image_grid_thw"),
            mm_token_type_ids=inputs["mm_token_type_ids"],
            cache=cache,
            use_cache=True,
        )
        prompt_states = prefill.last_hidden_state  # [B, L, D]
        logits = model.lm_head(prompt_states[:, -1]).float()

        stop_ids = self.stop_ids.to(device)
        prompt_lengths = attention.sum(1)  # [B]
        next_position = (prompt_lengths + rope_deltas[:, 0]).to(torch.long)  # [B]
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        lengths = torch.zeros(batch, dtype=torch.long, device=device)
        tokens, logprobs, states = [], [], []
        with _text_attention(model, "sdpa"):
            for t in range(max_new_tokens):
                token = sample(logits, temperature, top_p, generator)
                token = torch.where(done, self.pad_id, token)
                logprobs.append(sampled_logprob(logits, token, temperature).masked_fill(done, 0.0))
                lengths += (~done).long()
                tokens.append(token)
                done = done | torch.isin(token, stop_ids)
                if t == max_new_tokens - 1:
                    break  # the last token is never fed: its state would predict nothing (H_c, SPEC.md §6)
                position = (next_position + t).view(1, batch, 1).expand(3, batch, 1)
                state, logits = self.step(model, token[:, None], position, mask, cache)
                states.append(state.clone())
                if (t + 1) % STOP_CHECK_EVERY == 0 and all_stopped(done, self.stop_group):
                    break
        generated = torch.stack(tokens, dim=1)  # [B, T]
        steps = torch.stack(states, dim=1) if states else prompt_states[:, :0]  # [B, T or T - 1, D]
        hidden, hidden_mask = _join_states(prompt_states, steps, prompt_lengths, lengths)
        return Generation(generated, lengths, torch.stack(logprobs, dim=1), hidden, hidden_mask, prompt_lengths)


def all_stopped(done: torch.Tensor, group: dist.ProcessGroup | None = None) -> bool:
    """Whether every sample in ``done`` [B] has stopped, on every rank of ``group`` when one is given (a host sync,
    then one all-reduce)."""
    stopped = done.all()
    if group is None:
        return bool(stopped)
    flag = stopped.to(torch.int32).reshape(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=group)
    return bool(flag)


@contextmanager
def _text_attention(model, implementation: str):
    """Run the language model with ``implementation`` inside the block. The decode step uses SDPA whatever the prefill
    used: its static cache holds unwritten slots that only the causal mask built from ``cache_position`` hides (a
    flash-attn 2D padding mask would let the query attend to them)."""
    config = model.config.text_config
    previous = config._attn_implementation
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = previous


def _join_states(
    prompt_states: torch.Tensor, step_states: torch.Tensor, prompt_lengths: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded H_c as ``generate(output_hidden_states=True)`` yields it: each sample's real prompt states (the
    end of the left-padded prefill) followed by the states of its first ``lengths - 1`` fed tokens (the last
    generated token is never fed). The real positions of a sample are one contiguous run of ``joined``."""
    joined = torch.cat([prompt_states, step_states], dim=1)  # [B, L + T', D]
    prompt_len = prompt_states.shape[1]
    total = prompt_lengths + lengths - 1  # [B]
    width = int(total.max())
    offsets = torch.arange(width, device=joined.device)  # [S]
    mask = offsets[None, :] < total[:, None]  # [B, S]
    index = (prompt_len - prompt_lengths)[:, None] + offsets[None, :]
    index = index.clamp(max=joined.shape[1] - 1)
    hidden = joined.gather(1, index[..., None].expand(-1, -1, joined.shape[2]))  # [B, S, D]
    hidden = hidden.masked_fill(~mask[..., None], 0.0)
    return hidden, mask.to(torch.long)
