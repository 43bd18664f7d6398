"""Sliding-window occlusion: xaitk's `SlidingWindow` masks scored by
`OcclusionScoring` or `SquaredDifferenceScoring` (`scoring`)."""

from __future__ import annotations

from steps.core.algorithm import ALGORITHMS, SCORING, SlidingAlgorithm, check_fits
from steps.core.parameters import IntList, Parameter

WINDOW_SIZE = Parameter("window_size", "2,2", IntList(minimum=1, length=2),
                        "Sliding window: window height,width in pixels.")
STRIDE = Parameter("stride", "1,1", IntList(minimum=1, length=2),
                   "Sliding window: step height,width.")


@ALGORITHMS.register
class SlidingWindow(SlidingAlgorithm):
    name = "sliding_window"
    xaitk = "`SlidingWindow` + `OcclusionScoring` or `SquaredDifferenceScoring`"
    parameters = (WINDOW_SIZE, STRIDE, SCORING)

    def check_shape(self, image_shape: tuple[int, ...]) -> None:
        check_fits(image_shape, {"window_size": self.window_size, "stride": self.stride})

    @classmethod
    def shape_only_masks(cls, perturber) -> bool:
        from xaitk_saliency.impls.perturb_image.sliding_window import SlidingWindow as Windows

        return type(perturber) is Windows

    def perturber(self):
        from xaitk_saliency.impls.perturb_image.sliding_window import SlidingWindow as Windows

        return Windows(window_size=tuple(self.window_size), stride=tuple(self.stride))

    def xaitk_stack(self):
        if self.scoring != "occlusion":  # xaitk's stack scores by occlusion only
            return self.generator()
        from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.slidingwindow import (
            SlidingWindowStack,
        )

        stack = SlidingWindowStack(window_size=tuple(self.window_size), stride=tuple(self.stride))
        stack.fill = self.fill
        return stack
