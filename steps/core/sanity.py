"""The model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018): a map that stays alike when the model's learned weights are redrawn
(`ImageModel.randomised`) barely depends on the model, so says little about it.

`map_similarity` compares a map with the map of the same image and class made with the
randomised model, by the paper's two measures, Spearman rank correlation of the absolute values
and SSIM, and by the rank correlation of the signed values. `fails_sanity` flags a pair whose
signed rank correlation is above `SANITY_THRESHOLD`: occlusion maps are signed (red for, blue
against the class) and read with their signs, while their absolute values follow where occluding
changes the image at all, whatever the model (on digits, occluding the black background with
black changes nothing), so the absolute correlation flags a trained model's maps as often as not
(docs/metrics.md gives the figures). Nothing here knows about MLflow.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SANITY_SEED = 0
#: Spearman rank correlation above which a map is flagged: it barely depends on the model.
SANITY_THRESHOLD = 0.5
SPEARMAN = "Sanity_spearman"
SPEARMAN_SIGNED = "Sanity_spearman_signed"
SSIM = "Sanity_ssim"
MEASURES = (SPEARMAN, SPEARMAN_SIGNED, SSIM)
#: xaitk's maps are in [-1, 1] (in [0, 1] with squared-difference scoring): SSIM's constants
#: are taken from that full span, the same for every map, rather than from each pair's own
#: range, so a pair of near-flat maps is not stretched into a contrast it does not have.
SSIM_DATA_RANGE = 2.0
#: skimage's default window, narrowed (odd) to fit maps smaller than it.
SSIM_WINDOW = 7


def map_similarity(real: np.ndarray, randomised: np.ndarray) -> dict[str, float]:
    """How alike two `[H, W]` maps of the same image and class are: `Sanity_spearman`, the
    Spearman rank correlation of their absolute values, `Sanity_spearman_signed`, of their
    values, and `Sanity_ssim`, their structural similarity; each 1.0 for identical maps.

    Identical maps give 1.0 for both even where a measure is undefined: a constant map (a
    constant model's occlusion maps are all zeros) has no ranking, and a NaN map (a constant
    model's squared-difference map is 0/0) has no values, but a map that did not change when
    the weights were redrawn is exactly what the check looks for. Otherwise a NaN map is taken
    for what it is, no map: both measures are NaN; and Spearman is NaN when only one map is
    constant (no ranking to correlate).
    """
    real = np.asarray(real, np.float64)
    randomised = np.asarray(randomised, np.float64)
    if real.shape != randomised.shape or real.ndim != 2:
        raise ValueError(f"expected two [H, W] maps of one shape, got {real.shape} and "
                         f"{randomised.shape}")
    if np.array_equal(real, randomised, equal_nan=True):
        return dict.fromkeys(MEASURES, 1.0)
    if np.isnan(real).any() or np.isnan(randomised).any():
        return dict.fromkeys(MEASURES, math.nan)
    return {SPEARMAN: _spearman(np.abs(real), np.abs(randomised)),
            SPEARMAN_SIGNED: _spearman(real, randomised), SSIM: _ssim(real, randomised)}


def _spearman(first: np.ndarray, second: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return math.nan  # scipy would warn and say the same
    return float(spearmanr(first.ravel(), second.ravel()).statistic)


def _ssim(first: np.ndarray, second: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    side = min(first.shape)
    window = min(SSIM_WINDOW, side if side % 2 else side - 1)
    if window < 3:  # SSIM needs a 3×3 window at least; the rank correlations still hold
        return math.nan
    return float(structural_similarity(first, second, data_range=SSIM_DATA_RANGE,
                                       win_size=window))


def fails_sanity(similarity: dict[str, float]) -> bool:
    """Whether the map barely depends on the model: its signed rank correlation with the
    randomised model's map is above `SANITY_THRESHOLD` (never for NaN: nothing was measured)."""
    return similarity[SPEARMAN_SIGNED] > SANITY_THRESHOLD


def sanity_config(seed: int = SANITY_SEED) -> dict[str, Any]:
    """What the check does, to log beside its measures."""
    return {
        "randomisation": "all layers at once",
        "redraw": "normal, each array's mean and std",
        "seed": seed,
        "threshold": SANITY_THRESHOLD,
        "measures": [
            {"name": SPEARMAN, "meaning": "Spearman rank correlation of the maps' absolute "
                                          "values, -1 to 1 (the paper's)"},
            {"name": SPEARMAN_SIGNED, "meaning": "Spearman rank correlation of the maps' "
                                                 "values, -1 to 1: above the threshold, the map "
                                                 "barely depends on the model"},
            {"name": SSIM, "meaning": "structural similarity of the maps, -1 to 1: 1 is the "
                                      "same map", "data_range": SSIM_DATA_RANGE,
             "win_size": SSIM_WINDOW},
        ],
    }
