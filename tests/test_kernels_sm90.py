"""The image kernels compile for the H100/H200 (sm_90a) without register spills, checked with no GPU present.

The interpreter accepts code that the compiler rejects (module constants, some constexpr arithmetic); this is the
check that the kernels tested in interpreter mode are also valid compiled kernels. NFT and GRPO kernels have
theirs in their own test files.
"""

import pytest
from sm90_compile import compile_in_subprocess

from spc_fast import colour, photometric
from spc_fast.kernels import bilateral_slice, photometric_finalize, photometric_stats, retouch_chain


def photometric_spec(dtype: str, transform: bool, newton: bool) -> dict:
    signature = {"image_ptr": dtype, "table_ptr": "*fp32", "matrix_ptr": "*fp32", "upper_ptr": "*fp32",
                 "out_ptr": "*fp32", "num_pixels": "i32", "pixels_per_program": "i32", "num_chunks": "i32",
                 "stride_b": "i64", "stride_c": "i32", "stride_p": "i32"}
    constexprs = {"IS_UINT8": dtype == "*u8", "HAS_TRANSFORM": transform, "CBRT_NEWTON": newton,
                  "BLOCK": photometric_stats.GPU_BLOCK}
    signature.update({name: "constexpr" for name in constexprs})
    return dict(module="spc_fast.kernels.photometric_stats", kernel="_photometric_stats_kernel",
                signature=signature, constexprs=constexprs, num_warps=photometric_stats.GPU_NUM_WARPS)


def retouch_spec(dtype: str, flat: bool, contrast: bool, saturation: bool) -> dict:
    pointers = ("matrix_ptr", "upper_ptr", "mu_ptr", "contrast_ptr", "saturation_ptr", "lab_ptr", "table_ptr")
    signature = {"x_ptr": dtype, "y_ptr": dtype, **{name: "*fp32" for name in pointers}, "width": "i32",
                 "num_pixels": "i32"}
    signature.update({name: "i64" if name.endswith("b") else "i32"
                      for name in ("sxb", "sxc", "sxh", "sxw", "syb", "syc", "syh", "syw")})
    constexprs = {"FLAT": flat, "IS_UINT8": dtype == "*u8", "IS_BFLOAT16": dtype == "*bf16", "CONTRAST": contrast,
                  "SATURATION": saturation, "BLOCK": retouch_chain.BLOCK_PIXELS}
    signature.update({name: "constexpr" for name in constexprs})
    return dict(module="spc_fast.kernels.retouch_chain", kernel="_retouch_chain_kernel", signature=signature,
                constexprs=constexprs, num_warps=retouch_chain.NUM_WARPS)


def bilateral_slice_spec(dtype: str) -> dict:
    signature = {"x_ptr": dtype, "y_ptr": dtype, "grid_ptr": "*fp32"}
    signature.update({name: "i32" for name in ("height", "width", "num_pixels", "gz", "gy", "gx")})
    signature.update({name: "i64" if name.endswith("b") else "i32"
                      for name in ("sxb", "sxc", "sxh", "sxw", "syb", "syc", "syh", "syw")})
    constexprs = {"IS_UINT8": dtype == "*u8", "IS_BFLOAT16": dtype == "*bf16", "BLOCK": bilateral_slice.BLOCK_PIXELS}
    signature.update({name: "constexpr" for name in constexprs})
    return dict(module="spc_fast.kernels.bilateral_slice", kernel="_bilateral_slice_kernel", signature=signature,
                constexprs=constexprs, num_warps=bilateral_slice.NUM_WARPS)


def photometric_finalize_spec() -> dict:
    c3, c2, c1, c0 = colour.MCCAMY_COEFFS
    constexprs = {"STATS": 7, "BLOCK": photometric_finalize.BLOCK_ROWS, "XE": colour.MCCAMY_XE,
                  "YE": colour.MCCAMY_YE, "C3": c3, "C2": c2, "C1": c1, "C0": c0, "CCT_MIN": colour.CCT_MIN,
                  "CCT_MAX": colour.CCT_MAX, "NEUTRAL_CCT": float(photometric.NEUTRAL_WHITE_CCT)}
    signature = {"partials_ptr": "*fp32", "out_ptr": "*fp32", "num_rows": "i32"}
    signature.update({name: "constexpr" for name in constexprs})
    return dict(module="spc_fast.kernels.photometric_finalize", kernel="_finalize_kernel", signature=signature,
                constexprs=constexprs, num_warps=photometric_finalize.NUM_WARPS)


@pytest.mark.slow
def test_image_kernels_compile_for_sm90_without_spills():
    specs = [photometric_spec(d, t, n) for d in ("*u8", "*bf16", "*fp32") for t in (False, True) for n in (True, False)]
    specs += [retouch_spec(d, f, True, True) for d in ("*u8", "*bf16", "*fp32") for f in (True, False)]
    specs += [retouch_spec("*u8", True, c, s) for c, s in ((False, True), (True, False), (False, False))]
    specs += [bilateral_slice_spec(d) for d in ("*u8", "*bf16", "*fp32")]
    specs.append(photometric_finalize_spec())
    for spec, usage in zip(specs, compile_in_subprocess(specs), strict=True):
        assert usage["spill_bytes"] == 0, (spec["kernel"], spec["constexprs"], usage)
        assert usage["registers"] <= 255, usage
