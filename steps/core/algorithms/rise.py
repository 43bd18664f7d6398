"""RISE (Petsiuk et al., 2018): random grid masks (xaitk's `RISEGrid`) scored by `RISEScoring`."""

from __future__ import annotations

from steps.core.algorithm import ALGORITHMS, SaliencyAlgorithm
from steps.core.parameters import BOOLEAN, Float, Integer, Parameter

N = Parameter("n", 1000, Integer(min=1), "RISE, random grid: number of random masks.")
S = Parameter("s", 4, Integer(min=1), "RISE: grid resolution of the masks.")
# 0 or 1 keeps no cell or every cell: every mask alike, so maps of nothing.
P1 = Parameter("p1", 0.5, Float(0, 1, min_open=True, max_open=True),
               "RISE, random grid: probability that a cell is kept.")
SEED = Parameter("seed", 0, Integer(min=0), "RISE, random grid: seed of the masks.")
DEBIASED = Parameter("debiased", True, BOOLEAN, "RISE: debias the scores by p1 (true/false).")


@ALGORITHMS.register
class Rise(SaliencyAlgorithm):
    name = "rise"
    xaitk = "`RISEGrid` + `RISEScoring` (debiased or not)"
    parameters = (N, S, P1, SEED, DEBIASED)

    def perturber(self):
        from xaitk_saliency.impls.perturb_image.rise import RISEGrid

        # threads=0: RISEGrid's threaded mask shifts share one RNG and are not reproducible.
        return RISEGrid(n=self.n, s=self.s, p1=self.p1, seed=self.seed, threads=0)

    @classmethod
    def shape_only_masks(cls, perturber) -> bool:
        from xaitk_saliency.impls.perturb_image.rise import RISEGrid

        # Without a seed it draws new masks on every call, like xaitk.
        return type(perturber) is RISEGrid and perturber.seed is not None

    def scorer(self):
        from xaitk_saliency.impls.gen_classifier_conf_sal.rise_scoring import RISEScoring

        return RISEScoring(p1=self.p1 if self.debiased else 0.0)

    def xaitk_stack(self):
        from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

        stack = RISEStack(n=self.n, s=self.s, p1=self.p1, seed=self.seed, threads=0,
                          debiased=self.debiased)
        stack.fill = self.fill
        return stack
