"""``spc-fast evaluate``: the paper's metrics from well-kept libraries, batched on the device, streamed from folders.

Read top to bottom: ``weights`` (the one weights folder, nothing downloaded) → ``networks`` (pyiqa, torchmetrics,
transformers models) → ``metrics`` (name -> library implementation, ``METRICS``) → ``pairs`` (pairing by name,
reading in batches) → ``run`` (``evaluate_pairs`` -> ``Report``) → ``cli`` (``main(argv)``).
"""

from spc_fast.evaluate.metrics import DEFAULT_METRICS, METRICS, Metric, build_scorers, parse_metrics
from spc_fast.evaluate.pairs import EvaluationError, Pair, Problem, pair_folders, read_image
from spc_fast.evaluate.run import Report, evaluate_pairs
from spc_fast.evaluate.weights import WEIGHT_FILES, WEIGHTS_ENV, weights_folder

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "WEIGHTS_ENV",
    "WEIGHT_FILES",
    "EvaluationError",
    "Metric",
    "Pair",
    "Problem",
    "Report",
    "build_scorers",
    "evaluate_pairs",
    "pair_folders",
    "parse_metrics",
    "read_image",
    "weights_folder",
]
