"""The partial statistics that ``photometric_stats`` writes: the contract between the kernel and
``spc_fast.photometric.finalize``, which combines them into attributes.

Per image and per block of pixels, float32 [B, NB, NUM_STATS] in STAT_NAMES order:
- count: pixels in the block;
- mean_l, m2_l: mean of L* and M2 (sum of squared deviations from that mean), so that blocks merge with Chan's
  parallel formula instead of the cancelling sum-of-squares form;
- sum_chroma: Σ C* = Σ sqrt(a*² + b*²);
- sum_x, sum_y, sum_z: Σ X, Σ Y, Σ Z (CIE XYZ, D65 white, Y of the white = 1).
The torch path (``spc_fast.photometric.block_stats_torch``) writes the same rows per tile. This module imports
nothing, so the contract is importable where Triton is not.
"""

STAT_NAMES = ("count", "mean_l", "m2_l", "sum_chroma", "sum_x", "sum_y", "sum_z")
NUM_STATS = len(STAT_NAMES)
