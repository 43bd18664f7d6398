"""MC-RISE (Hatakeyama et al., 2022): RISE masks in several fill colours (xaitk's `MCRISEGrid`),
scored by `MCRISEScoring`, as xaitk's `MCRISEStack` composes them (always debiased).

Its maps have an extra leading axis, one map per fill colour: `[colours, classes, H, W]`; each
says how much filling a region with that colour moves each class's confidence."""

from __future__ import annotations

from steps.core.algorithm import ALGORITHMS, SaliencyAlgorithm
from steps.core.algorithms.rise import N, P1, S, SEED
from steps.core.errors import ParameterError
from steps.core.parameters import NumberList, Parameter, ParamType


class ColourList(ParamType):
    """`;`-separated colours, each one value (grey, or the same on every channel) or one per
    channel, in [0, 1]: `0;1` is black and white."""

    name = "colour_list"
    channels = NumberList(minimum=0)

    def convert(self, value, param=None, ctx=None):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        colours = tuple(self.channels.convert(part, param, ctx) for part in text.split(";"))
        if not text or any(c > 1 for colour in colours for c in colour) or \
                len({len(colour) for colour in colours}) != 1:
            self.fail(f"{value!r} is not ';'-separated colours in [0, 1] with the same number "
                      "of channels each, e.g. 0;1 or 1,0,0;0,0,1", param, ctx)
        return colours


FILL_COLORS = Parameter("fill_colors", "0;1", ColourList(),
                        "MC-RISE: fill colours, ';'-separated, each a grey value or R,G,B in "
                        "[0, 1] (e.g. 0;1 or 1,0,0;0,0,1).")


@ALGORITHMS.register
class McRise(SaliencyAlgorithm):
    name = "mc_rise"
    xaitk = "`MCRISEGrid` + `MCRISEScoring`, as xaitk's `MCRISEStack` (always debiased)"
    parameters = (N, S, P1, SEED, FILL_COLORS)
    uses_fill = False

    def check_shape(self, image_shape: tuple[int, ...]) -> None:
        channels = image_shape[2] if len(image_shape) == 3 else 1
        width = len(self.fill_colors[0])
        if width not in (1, channels):
            raise ParameterError(f"fill colours of {width} values do not fit {channels}-"
                                 "channel images; give one value per colour, or one per "
                                 "channel", param="fill_colors")

    def generator(self):
        from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.mc_rise import MCRISEStack

        return MCRISEStack(n=self.n, s=self.s, p1=self.p1, seed=self.seed, threads=0,
                           fill_colors=[list(colour) for colour in self.fill_colors])

    def xaitk_stack(self):
        return self.generator()
