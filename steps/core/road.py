"""ROAD (Rong et al., ICML 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
Methods"): pixels removed by noisy linear imputation instead of set to a constant.

Deleting pixels to a constant leaks the shape of what was deleted, and with it the class; ROAD
replaces each removed pixel by the weighted mean of its eight neighbours (the four direct ones
weigh 1/6, the diagonal ones 1/12), removed neighbours being unknowns too, so that the removed
region is a smooth fill of its surroundings: one sparse linear system per image, the same
matrix for every channel. Small Gaussian noise (`NOISE`, in [0, 1] pixel units) is added to the
filled pixels. The pixels are removed most relevant first (MoRF: a faithful map makes the
class's probability fall fast, a low mean) or least relevant first (LeRF: it stays high), at
each of `FRACTIONS`; the metric is the mean probability over them. Nothing here knows about
MLflow.
"""

from __future__ import annotations

import numpy as np

#: (row offset, column offset, weight) of the neighbours a removed pixel is the mean of.
NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
              (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))
#: Standard deviation of the noise added to imputed pixels, as the paper's reference code.
NOISE = 0.01
#: Shares of the pixels removed, as the paper evaluates.
FRACTIONS = tuple(np.round(np.arange(1, 10) / 10, 1))
MORF, LERF = "morf", "lerf"


def noisy_linear_imputation(image: np.ndarray, removed: np.ndarray, noise: float = NOISE,
                            rng: np.random.Generator | None = None) -> np.ndarray:
    """`image` (`[H, W]` or `[H, W, C]`) with the `removed` pixels (`[H, W]` booleans) replaced:
    each by the weighted mean of its in-image neighbours (removed ones solved for jointly),
    plus Gaussian noise of standard deviation `noise` (none with 0)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    height, width = removed.shape
    flat = image.reshape(height * width, -1).astype(np.float64)
    unknown = np.flatnonzero(removed.ravel())
    if not len(unknown):
        return image.copy()
    index_of = np.full(height * width, -1, dtype=np.int64)
    index_of[unknown] = np.arange(len(unknown))
    rows, cols = np.divmod(unknown, width)
    entries_row, entries_col, entries_value = [], [], []
    right = np.zeros((len(unknown), flat.shape[1]))
    weight_sum = np.zeros(len(unknown))
    for down, across, weight in NEIGHBOURS:
        r, c = rows + down, cols + across
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        neighbour = np.where(inside, r * width + c, 0)
        weight_sum += weight * inside
        solved = inside & (index_of[neighbour] >= 0)
        known = inside & ~solved
        right[known] += weight * flat[neighbour[known]]
        entries_row.append(np.flatnonzero(solved))
        entries_col.append(index_of[neighbour[solved]])
        entries_value.append(np.full(int(solved.sum()), -weight))
    count = len(unknown)
    diagonal = np.arange(count)
    system = coo_matrix((np.concatenate([weight_sum, *entries_value]),
                         (np.concatenate([diagonal, *entries_row]),
                          np.concatenate([diagonal, *entries_col]))), shape=(count, count))
    solution = splu(system.tocsc()).solve(right)
    if noise:
        solution = solution + noise * (rng or np.random.default_rng(0)).standard_normal(
            solution.shape)
    filled = flat.copy()
    filled[unknown] = solution
    return filled.reshape(image.shape).astype(image.dtype)


def road_images(image: np.ndarray, saliency: np.ndarray, order: str,
                fractions=FRACTIONS, seed: int = 0) -> np.ndarray:
    """`[len(fractions), *image.shape]`: the image with the given share of its pixels removed
    by imputation, the most salient first (`morf`) or the least salient first (`lerf`); the
    noise is seeded, so the same map of the same image gives the same images."""
    height, width = image.shape[:2]
    pixels = height * width
    ranking = np.asarray(saliency, dtype=np.float64).ravel()
    order_of = np.argsort(-ranking if order == MORF else ranking, kind="stable")
    rank = np.empty(pixels, dtype=np.int64)
    rank[order_of] = np.arange(pixels)
    rng = np.random.default_rng(seed)
    return np.stack([
        noisy_linear_imputation(image, (rank < round(fraction * pixels)).reshape(height, width),
                                rng=rng)
        for fraction in fractions])
