"""The one-launch merge of per-block partials (``kernels/photometric_finalize.py``) gives ``photometric.finalize``'s
attributes: float64 sums, Chan's variance and the McCamy CCT, for any number of blocks, black images included."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spc_fast import photometric
from spc_fast.kernels import dispatch
from spc_fast.kernels.photometric_finalize import BLOCK_ROWS, photometric_finalize
from spc_fast.kernels.photometric_partials import NUM_STATS

NEUTRAL = float(photometric.NEUTRAL_WHITE_CCT)


def partials(batch: int, rows: int, seed: int) -> torch.Tensor:
    """Rows as a kernel writes them: pixel counts, mean and M2 of L*, sums of chroma and of X, Y, Z."""
    g = torch.Generator().manual_seed(seed)
    count = torch.randint(1, 4097, (batch, rows), generator=g).double()
    mean_l = torch.rand(batch, rows, generator=g, dtype=torch.float64) * 100
    m2 = torch.rand(batch, rows, generator=g, dtype=torch.float64) * count * 400
    chroma = torch.rand(batch, rows, generator=g, dtype=torch.float64) * count * 60
    xyz = torch.rand(batch, rows, 3, generator=g, dtype=torch.float64) * count[..., None]
    return torch.cat([torch.stack([count, mean_l, m2, chroma], -1), xyz], -1).float()


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 3), rows=st.integers(1, 2 * BLOCK_ROWS + 5), seed=st.integers(0, 2**16))
def test_matches_the_torch_merge(batch, rows, seed):
    p = partials(batch, rows, seed)
    assert p.shape == (batch, rows, NUM_STATS)
    torch.testing.assert_close(photometric_finalize(p, NEUTRAL), photometric.finalize(p), rtol=2e-6, atol=1e-5)


def test_black_images_get_the_neutral_white_and_the_rest_is_exact():
    p = partials(2, 7, 0)
    p[0, :, 3:] = 0.0  # no chroma, no light
    got = photometric_finalize(p, NEUTRAL)
    assert got[0, 3].item() == pytest.approx(NEUTRAL, rel=1e-6)
    torch.testing.assert_close(got, photometric.finalize(p), rtol=2e-6, atol=1e-5)


def test_non_contiguous_rows():
    p = partials(3, 40, 1)
    torch.testing.assert_close(photometric_finalize(p[::2], NEUTRAL), photometric.finalize(p[::2]), rtol=2e-6,
                               atol=1e-5)


def test_attributes_take_the_merge_on_the_kernel_path():
    images = torch.rand(2, 3, 33, 47, generator=torch.Generator().manual_seed(2))
    assert dispatch.use_triton(images, op="photometric_stats")
    with dispatch.torch_fallback():
        expected = photometric.attributes(images)
    torch.testing.assert_close(photometric.attributes(images), expected, rtol=1e-5, atol=1e-4)


def test_opcheck():
    torch.library.opcheck(photometric_finalize, (partials(2, 9, 3), NEUTRAL))
