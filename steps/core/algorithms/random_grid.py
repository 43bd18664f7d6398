"""Random grid occlusion: xaitk's `RandomGrid` masks (random cells of a fixed pixel size,
randomly shifted) scored by `OcclusionScoring` or `SquaredDifferenceScoring` (`scoring`)."""

from __future__ import annotations

from steps.core.algorithm import ALGORITHMS, SCORING, OcclusionAlgorithm, check_fits
from steps.core.algorithms.rise import N, P1, SEED
from steps.core.parameters import IntList, Parameter

CELL_SIZE = Parameter("cell_size", "2,2", IntList(minimum=1, length=2),
                      "Random grid: cell height,width in pixels.")


@ALGORITHMS.register
class RandomGrid(OcclusionAlgorithm):
    name = "random_grid"
    xaitk = "`RandomGrid` + `OcclusionScoring` or `SquaredDifferenceScoring`"
    parameters = (N, CELL_SIZE, P1, SEED, SCORING)

    def check_shape(self, image_shape: tuple[int, ...]) -> None:
        check_fits(image_shape, {"cell_size": self.cell_size})

    @classmethod
    def shape_only_masks(cls, perturber) -> bool:
        from xaitk_saliency.impls.perturb_image.random_grid import RandomGrid as Grid

        # Without a seed it draws new masks on every call, like xaitk.
        return type(perturber) is Grid and perturber.seed is not None

    def perturber(self):
        from xaitk_saliency.impls.perturb_image.random_grid import RandomGrid as Grid

        # threads=0: threaded shifts share one RNG and are not reproducible.
        return Grid(n=self.n, s=tuple(self.cell_size), p1=self.p1, seed=self.seed, threads=0)

    def xaitk_stack(self):
        # xaitk has no high-level stack for it: its own composition is the reference.
        return self.generator()
