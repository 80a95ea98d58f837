"""Real-valued RoPE for the Qwen-Image DiT (a compile/export-friendly replacement of diffusers' complex path).

diffusers builds Qwen-Image's rotary tables with `torch.polar` and rotates q/k with `view_as_complex`; complex
tensors are what diffusers issue 12668 reports breaking compile/export (with torch 2.14 and diffusers 0.42.1 the
complex path does trace under `fullgraph=True` with the aot_eager backend on CPU; Inductor and export are where
complex support is thin). The real path keeps every graph free of complex numbers. `use_real_rope`
swaps two pieces of a loaded `QwenImageTransformer2DModel`, leaving its weights and state_dict untouched:

- `pos_embed` -> `RealQwenRope`: the same positions and frequencies, returned as `[S, head_dim / 2, 2]` (cos, sin)
  float32 tables computed on the fly (no caches, no complex numbers);
- every block's attention processor -> `RealRopeJointAttnProcessor`: the same joint text+image attention, rotating
  the (even, odd) pairs of q and k as `(a cos - b sin, a sin + b cos)`, which is the complex product written out
  (traced graphs only: eager calls keep the one-kernel complex product, see `apply_real_rope`).
  It lays the joint sequence out image-first, so H_c's right padding is a suffix of the keys: one [B, S] key mask
  serves every diffusers backend, and flash-attn's varlen kernel can drop the padding.

Positions (scale_rope=True, as in the release): image `i` of a sample's image list, of (frames, h, w) latent patches,
gets frame positions `i .. i+frames-1` and centred height/width positions `-(n - n//2) .. n//2 - 1`; text tokens
follow at `max_i max(h_i//2, w_i//2) + arange(L)` on all three axes.
"""

from __future__ import annotations

import torch
from diffusers import QwenImageTransformer2DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from torch import nn

from spc_fast.attention import DIFFUSERS_MASKED_BACKEND


def _angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    inv_freq = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, device=positions.device).float().div(dim))
    return positions.float()[:, None] * inv_freq[None, :]  # [N, dim / 2]


def _cos_sin(angles: torch.Tensor) -> torch.Tensor:
    return torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1)  # [..., 2]


def _centred(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(-(n - n // 2), n // 2, device=device)


class RealQwenRope(nn.Module):
    """Drop-in for diffusers' `QwenEmbedRope` (scale_rope=True) returning real (cos, sin) tables."""

    def __init__(self, axes_dim: tuple[int, int, int], theta: float = 10000.0) -> None:
        super().__init__()
        self.axes_dim = tuple(axes_dim)
        self.theta = theta

    def _image(self, index: int, frames: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        d0, d1, d2 = self.axes_dim
        f = _angles(torch.arange(index, index + frames, device=device), d0, self.theta)  # [F, d0/2]
        h = _angles(_centred(height, device), d1, self.theta)  # [H, d1/2]
        w = _angles(_centred(width, device), d2, self.theta)  # [W, d2/2]
        grid = torch.cat(
            [
                f[:, None, None].expand(frames, height, width, -1),
                h[None, :, None].expand(frames, height, width, -1),
                w[None, None, :].expand(frames, height, width, -1),
            ],
            dim=-1,
        )  # [F, H, W, head_dim / 2]
        return _cos_sin(grid.reshape(frames * height * width, -1))

    def forward(
        self, video_fhw, device: torch.device | None = None, max_txt_seq_len: int | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`video_fhw`: per-sample lists of (frames, h, w) in patches (the first sample's is used, as diffusers)."""
        if max_txt_seq_len is None:
            raise ValueError("max_txt_seq_len must be given (the text sequence length)")
        shapes = video_fhw[0] if isinstance(video_fhw, list) else video_fhw
        shapes = shapes if isinstance(shapes, list) else [shapes]
        img = torch.cat([self._image(i, *fhw, device) for i, fhw in enumerate(shapes)], dim=0)
        start = max(max(h // 2, w // 2) for _, h, w in shapes)
        # a SymInt length stays symbolic under torch.export (int() would bake the example's length in)
        length = max_txt_seq_len if isinstance(max_txt_seq_len, (int, torch.SymInt)) else int(max_txt_seq_len)
        txt_pos = torch.arange(start, start + length, device=device)
        txt = torch.cat([_angles(txt_pos, d, self.theta) for d in self.axes_dim], dim=-1)
        return img, _cos_sin(txt)


def apply_real_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate (even, odd) channel pairs of x [B, S, H, D] by a (cos, sin) table [S, D / 2, 2]; float32 math.

    Traced graphs (torch.compile, torch.export) get the real form; eager calls multiply as complex numbers, one
    kernel where the real form is six (the same values: the real form is that product written out).
    """
    if torch.compiler.is_compiling():
        return rotate_pairs(x, table)
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # [B, S, H, D/2]
    return torch.view_as_real(pairs * torch.view_as_complex(table)[None, :, None]).flatten(3).type_as(x)


def rotate_pairs(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The rotation in real arithmetic: (a, b) -> (a cos - b sin, a sin + b cos), no complex tensors."""
    cos = table[None, :, None, :, 0]  # [1, S, 1, D/2]
    sin = table[None, :, None, :, 1]
    a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # [B, S, H, D/2] each
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(3).type_as(x)


class RealRopeJointAttnProcessor:
    """Joint text+image attention of a Qwen-Image block with the real-valued rotation (see the module docstring)."""

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_hidden_states_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if encoder_hidden_states is None or attention_mask is not None:
            raise ValueError(
                "Qwen-Image joint attention needs encoder_hidden_states and takes no attention_mask "
                "(pass encoder_hidden_states_mask)"
            )
        if encoder_hidden_states_mask is not None:
            # [B, S_img + S_txt] key mask; H_c's right padding is its suffix (what varlen flash kernels need)
            image_mask = encoder_hidden_states_mask.new_ones(hidden_states.shape[:2])
            attention_mask = torch.cat([image_mask, encoder_hidden_states_mask], dim=1).bool()
        head_dim = attn.inner_dim // attn.heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (-1, head_dim))  # [B, S, H, D]

        img_q, img_k, img_v = (
            heads(attn.to_q(hidden_states)),
            heads(attn.to_k(hidden_states)),
            heads(attn.to_v(hidden_states)),
        )
        txt_q = heads(attn.add_q_proj(encoder_hidden_states))
        txt_k = heads(attn.add_k_proj(encoder_hidden_states))
        txt_v = heads(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_q is not None:
            img_q = attn.norm_q(img_q)
        if attn.norm_k is not None:
            img_k = attn.norm_k(img_k)
        if attn.norm_added_q is not None:
            txt_q = attn.norm_added_q(txt_q)
        if attn.norm_added_k is not None:
            txt_k = attn.norm_added_k(txt_k)
        if image_rotary_emb is not None:
            img_table, txt_table = image_rotary_emb
            img_q, img_k = apply_real_rope(img_q, img_table), apply_real_rope(img_k, img_table)
            txt_q, txt_k = apply_real_rope(txt_q, txt_table), apply_real_rope(txt_k, txt_table)

        seq_img = hidden_states.shape[1]
        backend = self._attention_backend
        if attention_mask is not None:
            backend = DIFFUSERS_MASKED_BACKEND.get(getattr(backend, "value", backend), backend)
        out = (
            dispatch_attention_fn(
                torch.cat([img_q, txt_q], dim=1),
                torch.cat([img_k, txt_k], dim=1),
                torch.cat([img_v, txt_v], dim=1),
                attn_mask=attention_mask,
                dropout_p=0.0,
                is_causal=False,
                backend=backend,
                parallel_config=self._parallel_config,
            )
            .flatten(2, 3)
            .to(img_q.dtype)
        )  # [B, S_img + S_txt, H * D]
        img_out = attn.to_out[0](out[:, :seq_img].contiguous())
        if len(attn.to_out) > 1:
            img_out = attn.to_out[1](img_out)
        return img_out, attn.to_add_out(out[:, seq_img:].contiguous())


def use_real_rope(transformer: QwenImageTransformer2DModel) -> QwenImageTransformer2DModel:
    """Switch a Qwen-Image DiT to the real-valued RoPE path in place (weights untouched); returns it."""
    if isinstance(transformer.pos_embed, RealQwenRope):
        return transformer
    if not transformer.pos_embed.scale_rope or getattr(transformer.config, "use_layer3d_rope", False):
        raise ValueError("the real RoPE path covers Qwen-Image's scale_rope=True layout only (not layer-3D RoPE)")
    transformer.pos_embed = RealQwenRope(tuple(transformer.config.axes_dims_rope), theta=transformer.pos_embed.theta)
    backend = next(iter(transformer.attn_processors.values()))._attention_backend
    processor = RealRopeJointAttnProcessor()
    processor._attention_backend = backend
    transformer.set_attn_processor(processor)
    return transformer
