"""The tiny VAE as a block-mean codec: set weights that make ``decode(encode(x))`` keep each photo's colours.

A tiny ``AutoencoderKLQwenImage`` with random weights maps every photo to nearly the same flat image, so an artist
trained against photo targets through it cannot show any learning. ``make_block_mean_codec_`` gives the same
diffusers class (same config, same code path, any size of this family wide enough) deterministic weights that
encode each 8x8 block's mean colour into the first three normalised latent channels and decode them back to flat
8x8 blocks: a low-pass codec that keeps colour and tone and loses only the detail inside a block.

How every parameter is set:

- The signal path is linear. The encoder's and decoder's ``conv_in`` write each colour v as an antisymmetric pair
  of channels (v, -v) and add one constant anchor channel; residual branches add 0 (their convolutions are zero),
  shortcuts copy channels, attention adds 0 (``proj`` is zero), downsamplers average 2x2, upsamplers (nearest, then
  a convolution) copy. Convolutions use only their centre spatial tap and their last temporal tap, the one that
  sees the current frame (the causal padding puts zeros before it; resamplers skip ``time_conv`` on the first
  frame), so decoding is local and tiled decoding equals untiled.
- The heads (RMS norm, SiLU, ``conv_out``) are the only non-linear step. The norm divides by the channel norm,
  which the anchor dominates: sqrt(A^2 + 2|v|^2) = A (1 + O(|v|^2 / A^2)), and gamma = A / sqrt(C) undoes the
  division. SiLU is exact on a pair, SiLU(v) - SiLU(-v) = v (sigmoid(v) + sigmoid(-v) = 1), which ``conv_out``
  takes.
- ``quant_conv`` maps the encoder's block mean v, in the VAE's [-1, 1] pixel scale, onto the raw latent whose
  normalised value ``(z - latents_mean) / latents_std`` (as ``PhotoArtist.encode``) is ``LATENT_SCALE * v``; the
  other normalised channels are 0 and the log-variance sits at the posterior's clamp floor, so a sample equals the
  mode. ``post_quant_conv`` undoes the normalisation, and the decoder reads the first three channels.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKLQwenImage
from diffusers.models.autoencoders.autoencoder_kl_qwenimage import (
    QwenImageResample,
    QwenImageResidualBlock,
    QwenImageRMS_norm,
)
from torch import nn

COLOURS = 3  # the latent channels that carry a block's mean R, G, B
WIDTH = 2 * COLOURS + 1  # channels the path needs: a (v, -v) pair per colour and the anchor
ANCHOR = 1000.0  # the anchor channel's value: the heads' norm is off by |v|^2 / ANCHOR^2, 3e-6 for |v| <= 1
LATENT_SCALE = 2.0  # normalised latent = LATENT_SCALE * block mean of 2 * rgb - 1: photos' block means of
# 2 * rgb - 1 spread with a standard deviation of about 0.45 per channel, twice that is the sampler noise's unit scale
LOGVAR = -30.0  # DiagonalGaussianDistribution's lower clamp: posterior std e^-15


def _pairs(width: int) -> torch.Tensor:
    """[width, COLOURS]: channel 2c carries colour c, channel 2c + 1 its negative; channel 2 * COLOURS is the anchor,
    which a bias sets (``_anchor_bias``)."""
    pairs = torch.zeros(width, COLOURS)
    for c in range(COLOURS):
        pairs[2 * c, c], pairs[2 * c + 1, c] = 1.0, -1.0
    return pairs


def _anchor_bias(width: int) -> torch.Tensor:
    bias = torch.zeros(width)
    bias[2 * COLOURS] = ANCHOR
    return bias


def _set_centre(conv: nn.Conv2d | nn.Conv3d, mixing: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """``conv`` as the per-pixel map ``out = mixing @ in + bias``: all weight on the centre spatial tap and, for a
    causal 3-D convolution, on the last temporal tap (the current frame)."""
    out_channels, in_channels = mixing.shape
    kernel = conv.weight.shape[2:]
    tap = (kernel[0] - 1, *(k // 2 for k in kernel[1:])) if conv.weight.dim() == 5 else tuple(k // 2 for k in kernel)
    conv.weight.zero_()
    conv.weight[(slice(None), slice(None), *tap)] = mixing.to(conv.weight)
    conv.bias.copy_(bias if bias is not None else torch.zeros(out_channels))


def _set_head(norm: QwenImageRMS_norm, conv_out: nn.Conv3d, out_rows: int) -> None:
    """norm -> SiLU -> conv_out as the linear read-out of the colour pairs into ``conv_out``'s first three channels."""
    channels = norm.gamma.shape[0]
    gamma = torch.ones(channels)
    gamma[: 2 * COLOURS] = ANCHOR / math.sqrt(channels)  # normalised pair channel -> exactly +-v again
    norm.gamma.copy_(gamma.view_as(norm.gamma))
    read_out = torch.zeros(out_rows, channels)
    read_out[:COLOURS] = _pairs(channels).T  # SiLU(v) - SiLU(-v) = v
    _set_centre(conv_out, read_out)


def _set_resample(resample: QwenImageResample) -> None:
    if resample.mode in ("downsample2d", "downsample3d"):
        conv = resample.resample[1]  # after ZeroPad2d((0, 1, 0, 1)), 3x3 stride 2: taps [0:2, 0:2] are the 2x2 block
        conv.weight.zero_()
        conv.weight[:, :, :2, :2] = (
            torch.eye(conv.out_channels, conv.in_channels).view(conv.out_channels, conv.in_channels, 1, 1) / 4
        )
        conv.bias.zero_()
    elif resample.mode in ("upsample2d", "upsample3d"):
        conv = resample.resample[1]  # after nearest-exact x2
        _set_centre(conv, torch.eye(conv.out_channels, conv.in_channels))
    if hasattr(resample, "time_conv"):  # used from the second frame on: the current frame, repeated for upsampling
        conv = resample.time_conv
        copies = conv.out_channels // conv.in_channels
        _set_centre(conv, torch.eye(conv.in_channels).repeat(copies, 1))


def _check(vae: AutoencoderKLQwenImage) -> None:
    if not isinstance(vae, AutoencoderKLQwenImage):
        raise ValueError(f"expected diffusers' AutoencoderKLQwenImage, got {type(vae).__name__}")
    cfg = vae.config
    if cfg.input_channels != COLOURS or cfg.z_dim < COLOURS:
        raise ValueError(
            f"the block-mean codec needs input_channels={COLOURS} and z_dim >= {COLOURS}, got "
            f"input_channels={cfg.input_channels}, z_dim={cfg.z_dim}; use TINY_VAE_CONFIG"
        )
    heads = {vae.encoder.conv_out, vae.decoder.conv_out}
    path = [
        m
        for part in (vae.encoder, vae.decoder)
        for m in part.modules()
        if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m not in heads
    ]
    narrowest = min(m.out_channels for m in path)
    if narrowest < WIDTH:
        raise ValueError(
            f"the block-mean codec needs every layer of the VAE at least {WIDTH} channels wide (a pair "
            f"per colour and an anchor), this config's narrowest has {narrowest}: raise base_dim "
            f"(base_dim={cfg.base_dim}, dim_mult={list(cfg.dim_mult)}); TINY_VAE_CONFIG fits"
        )


@torch.no_grad()
def make_block_mean_codec_(vae: AutoencoderKLQwenImage) -> AutoencoderKLQwenImage:
    """Set every parameter of ``vae`` in place so that it encodes 8x8 block means and decodes flat blocks (module
    docstring); returns ``vae``. Normalised latent channels 0-2 are ``LATENT_SCALE`` times the block's mean of
    ``2 * rgb - 1``, the others 0.
    Raises ValueError for a VAE of another class, other channel counts or a layer too narrow for the colour pairs."""
    _check(vae)
    for parameter in vae.parameters():
        parameter.zero_()  # residual branches, attention and unused channels stay exactly zero
    for module in vae.modules():
        if isinstance(module, QwenImageRMS_norm):
            module.gamma.fill_(1.0)
        elif isinstance(module, QwenImageResidualBlock) and isinstance(module.conv_shortcut, nn.Conv3d):
            shortcut = module.conv_shortcut
            _set_centre(shortcut, torch.eye(shortcut.out_channels, shortcut.in_channels))
        elif isinstance(module, QwenImageResample):
            _set_resample(module)
    cfg, z_dim = vae.config, vae.config.z_dim
    mean, std = torch.tensor(cfg.latents_mean, dtype=torch.float32), torch.tensor(cfg.latents_std, dtype=torch.float32)

    encoder_in = vae.encoder.conv_in
    _set_centre(encoder_in, _pairs(encoder_in.out_channels), _anchor_bias(encoder_in.out_channels))
    _set_head(vae.encoder.norm_out, vae.encoder.conv_out, 2 * z_dim)
    quant = torch.zeros(2 * z_dim, 2 * z_dim)
    quant[range(COLOURS), range(COLOURS)] = std[:COLOURS] * LATENT_SCALE
    _set_centre(vae.quant_conv, quant, torch.cat([mean, torch.full((z_dim,), LOGVAR)]))

    _set_centre(vae.post_quant_conv, torch.diag(1 / std), -mean / std)
    decoder_in = vae.decoder.conv_in
    mixing = torch.zeros(decoder_in.out_channels, z_dim)
    mixing[:, :COLOURS] = _pairs(decoder_in.out_channels) / LATENT_SCALE
    _set_centre(decoder_in, mixing, _anchor_bias(decoder_in.out_channels))
    _set_head(vae.decoder.norm_out, vae.decoder.conv_out, COLOURS)
    return vae
