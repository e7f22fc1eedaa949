"""Metrics of a prediction against the truth, streamed chunk by chunk (no torch).

Axis order (z, y, x); distances in voxels. Whole-volume functions take numpy arrays; the
streamed :func:`evaluate` takes paths or numpy/dask arrays and gives the same numbers.
"""

from volseg.metrics.betti_matching import betti_matching
from volseg.metrics.components import label_chunked
from volseg.metrics.evaluate import METRICS, combined_score, evaluate, parse_metrics
from volseg.metrics.intensity import psnr, ssim
from volseg.metrics.overlap import dice, surface_dice
from volseg.metrics.preview import write_preview
from volseg.metrics.leaderboard_tiles import tiled_topology
from volseg.metrics.topology import betti_numbers, euler_chunked, topology_score
from volseg.metrics.voi import variation_of_information, voi_score

__all__ = ["evaluate", "parse_metrics", "METRICS", "combined_score", "dice", "surface_dice",
           "psnr", "ssim", "variation_of_information", "voi_score", "betti_numbers", "euler_chunked",
           "topology_score", "tiled_topology", "betti_matching", "label_chunked", "write_preview"]
