"""Sliding radial occlusion: xaitk's `SlidingRadial` masks (an ellipse, optionally with blurred
edges, slid over the image) scored by `OcclusionScoring` or `SquaredDifferenceScoring`
(`scoring`)."""

from __future__ import annotations

from steps.core.algorithm import ALGORITHMS, SCORING, SlidingAlgorithm, check_fits
from steps.core.algorithms.sliding_window import STRIDE
from steps.core.parameters import NumberList, Parameter

RADIUS = Parameter("radius", "2,2", NumberList(minimum=0, min_open=True, length=2),
                   "Sliding radial: occluded ellipse's radius height,width in pixels.")
SIGMA = Parameter("sigma", "", NumberList(minimum=0, min_open=True, length=2, allow_empty=True),
                  "Sliding radial: Gaussian blur of the ellipse's edge, height,width "
                  "(empty: hard edge).")


@ALGORITHMS.register
class SlidingRadial(SlidingAlgorithm):
    name = "sliding_radial"
    xaitk = "`SlidingRadial` + `OcclusionScoring` or `SquaredDifferenceScoring`"
    parameters = (RADIUS, STRIDE, SIGMA, SCORING)

    def check_shape(self, image_shape: tuple[int, ...]) -> None:
        check_fits(image_shape, {"stride": self.stride})

    @classmethod
    def shape_only_masks(cls, perturber) -> bool:
        from xaitk_saliency.impls.perturb_image.sliding_radial import SlidingRadial as Radial

        return type(perturber) is Radial

    def perturber(self):
        from xaitk_saliency.impls.perturb_image.sliding_radial import SlidingRadial as Radial

        return Radial(radius=tuple(self.radius), stride=tuple(self.stride),
                      sigma=tuple(self.sigma) or None)

    def xaitk_stack(self):
        # xaitk has no high-level stack for it: its own composition is the reference.
        return self.generator()
