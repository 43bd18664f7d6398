"""Comparing algorithm configurations: parsing `-P compare=`, labels, and xaitk's agreement
measures (the end-to-end comparison runs in tests/test_reuse.py, beside the step reuse it
relies on)."""

from __future__ import annotations

from steps.core.errors import ParameterError
import numpy as np
import pytest
from xaitk_saliency.utils.sal_metrics import compute_ssd, compute_xcorr

from steps.core.algorithm import make_algorithm
from steps.core.agreement import Configuration, Configurations, agreements, configuration_labels


def parse(text):
    return Configurations().convert(text, None, None)


def test_names_and_settings_are_read_and_converted_by_each_parameter_s_type():
    first, second, third = parse(" rise , rise(s=8 n=2000),sliding_window(window_size=3,3 stride=1,2)")
    assert first == Configuration("rise")
    assert second == Configuration("rise", (("n", 2000), ("s", 8)))
    assert third == Configuration("sliding_window", (("stride", (1, 2)), ("window_size", (3, 3))))
    assert str(third) == "sliding_window(stride=1,2 window_size=3,3)"
    # The canonical text reads back as the same configurations (what the driver logs).
    assert parse(",".join(map(str, (first, second, third)))) == (first, second, third)
    assert parse("") == ()


def test_a_configuration_overrides_the_shared_values():
    shared = {"n": 50, "s": 4, "seed": 3, "window_size": (2, 2)}
    rise = Configuration("rise", (("s", 8),)).algorithm(shared)
    assert (rise.n, rise.s, rise.seed) == (50, 8, 3)
    assert Configuration("sliding_window").algorithm(shared).window_size == (2, 2)


@pytest.mark.parametrize("text,words", [
    ("rise", "names one configuration; give at least two"),
    ("rise,gradcam", "'gradcam' is not an algorithm; choose from mc_rise, random_grid, rise"),
    ("rise,sliding_window(n=5)", "'n=5' in sliding_window(...) is not a setting of "
                                 "sliding_window; give key=value with a key from window_size"),
    ("rise,rise(s)", "'s' in rise(...) is not a setting"),
    ("rise,rise(s=0)", "rise(s=...): 0 is not in the range x>=1"),
    ("rise,rise(p1=nan)", "'nan' is not a finite number"),
    ("rise(s=8),rise(s=8)", "rise(s=8) is given twice"),
    ("rise,sliding_window,", "ends with a comma"),
    ("rise,(s=2)", "cannot read '(s=2)'"),
    ("rise,rise(s=2", "cannot read 'rise(s=2'"),
])
def test_bad_configurations_are_one_message(text, words):
    with pytest.raises(ParameterError) as error:
        parse(text)
    assert words in str(error.value)


def test_an_algorithm_describes_itself_by_the_settings_it_changes():
    assert str(make_algorithm("rise")) == "rise"
    assert str(make_algorithm("rise", s=8, window_size=(4, 4))) == "rise(s=8)"
    assert str(make_algorithm("sliding_window", stride=(2, 2))) == "sliding_window(stride=2,2)"


def used(name, **values):
    return make_algorithm(name, **values).used_params()


def test_labels_are_names_then_the_settings_that_tell_configurations_apart():
    assert configuration_labels([used("rise"), used("sliding_window")]) == [
        "rise", "sliding_window"]
    assert configuration_labels([used("rise", s=4), used("rise", s=8, p1=0.25),
                                 used("sliding_window")]) == [
        "rise_s4_p10.5", "rise_s8_p10.25", "sliding_window"]
    assert configuration_labels([used("sliding_window", stride=(1, 2)),
                                 used("sliding_window")]) == [
        "sliding_window_stride1_2", "sliding_window_stride1_1"]
    # Nothing tells them apart (e.g. one configuration of two models): their position does.
    assert configuration_labels([used("rise"), used("rise")]) == ["rise_1", "rise_2"]


def test_agreements_are_xaitk_s_measures_for_every_pair():
    rng = np.random.default_rng(0)
    maps = {"a": rng.random((8, 8)), "b": rng.random((8, 8)), "c": rng.random((8, 8))}
    found = agreements(maps)
    assert list(found) == [("a", "b"), ("a", "c"), ("b", "c")]
    for (first, second), values in found.items():
        assert values == {"Xcorr": compute_xcorr(maps[first], maps[second]),
                          "Ssd": compute_ssd(maps[first], maps[second])}
    same = agreements({"a": maps["a"], "twice": 2 * maps["a"]})[("a", "twice")]
    assert same["Xcorr"] == pytest.approx(1.0)
    assert agreements({"a": maps["a"], "b": maps["a"]})[("a", "b")]["Ssd"] == 0.0


def test_comparison_pictures_say_what_the_compared_maps_mean():
    from steps.compare import map_meaning
    from steps.core import plots

    rise, window = {"algorithm": "rise"}, {"algorithm": "sliding_window", "scoring": "occlusion"}
    squared = {"algorithm": "sliding_window", "scoring": "squared_difference"}
    assert map_meaning([rise, window]) == plots.SHOWING
    assert map_meaning([squared, {**squared, "stride": "1,1"}]) == plots.OCCLUDING
    assert map_meaning([rise, squared]) == plots.COMPARED
    assert map_meaning([rise, {"algorithm": "mc_rise"}]) == plots.COMPARED


def test_configurations_rank_by_beating_random_then_road_gap_sanity_failures_last():
    from steps import store_names
    from steps.core.ranking import from_row, rank_configurations, ranking_line, table_row

    beating, gap = store_names.BEATING_RANDOM_METRIC, store_names.ROAD_GAP_MEAN_METRIC
    failing = store_names.FAILING_SANITY_METRIC
    ranked = rank_configurations({
        "a": {beating: 0.8, gap: 0.1, failing: 0.5},  # half failing: not yet last
        "best_on_everything_but_sanity": {beating: 1.0, gap: 0.9, failing: 0.6},
        "b": {beating: 0.8, gap: 0.3, "Entropy_mean": 4.0},
        "no_road": {beating: 0.9},  # an older run, no ROAD: the share beating random comes first
        "same_as_a": {beating: 0.8, gap: 0.1},
        "no_beating": {gap: 0.5, beating: float("nan")},
        "worse": {beating: 0.5, gap: 0.4},
    })
    assert [(r.rank, r.label) for r in ranked] == [
        (1, "no_road"), (2, "b"), (3, "a"), (3, "same_as_a"), (5, "worse"), (6, "no_beating"),
        (7, "best_on_everything_but_sanity")]
    assert ranking_line(ranked[:2] + ranked[5:]) == (
        "1. no_road (90% beat random, ROAD gap n/a), 2. b (80% beat random, ROAD gap 0.30), "
        "6. no_beating (n/a beat random, ROAD gap 0.50), 7. best_on_everything_but_sanity "
        "(100% beat random, ROAD gap 0.90, fails the sanity check)")
    # Equal share beating random: the ROAD gap decides, a missing one last.
    assert [r.label for r in rank_configurations({
        "x": {beating: 0.5}, "y": {beating: 0.5, gap: -0.2}, "z": {beating: 0.5, gap: 0.0}})] == [
        "z", "y", "x"]
    # A row of the table, read back with its missing figures as NaN, is the same ranking.
    row = {**table_row(ranked[0], "r1"), gap: float("nan")}
    assert list(row)[:3] == ["rank", "label", "saliency_run_id"]
    assert from_row(row) == (ranked[0], "r1")


def test_the_ranked_road_means_are_the_step_run_s_means_of_the_road_metrics():
    from steps import store_names
    from steps.core.metrics import ROAD_GAP, RoadLerf, RoadMorf

    assert (store_names.ROAD_MORF_MEAN_METRIC, store_names.ROAD_LERF_MEAN_METRIC,
            store_names.ROAD_GAP_MEAN_METRIC) == tuple(
        store_names.mean_metric(name) for name in (RoadMorf.name, RoadLerf.name, ROAD_GAP))
