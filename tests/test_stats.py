"""Accuracy intervals: what a few hundred test images can and cannot tell."""

import pytest

from edgetune.benchmarks.results import sampling_note
from edgetune.stats import accuracy_summary, format_accuracy, wilson_interval


def test_wilson_interval_known_values():
    # 194/200 (97.0%): the textbook Wilson interval, z = 1.96
    lo, hi = wilson_interval(194, 200)
    assert lo == pytest.approx(0.93611, abs=1e-4) and hi == pytest.approx(0.98618, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-4) and hi == pytest.approx(0.76341, abs=1e-4)


def test_wilson_interval_edges():
    lo, hi = wilson_interval(200, 200)
    assert hi == 1.0 and 0.98 < lo < 0.99  # 100% on 200 images still allows ~1.9% errors
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-4)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    # more images, narrower interval around the same accuracy
    narrow, wide = wilson_interval(975, 1000), wilson_interval(195, 200)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_summary_and_format_round_float32_accuracy():
    # Keras reports accuracy as a float32: 0.97 -> 0.9700000286...
    s = accuracy_summary(0.9700000286102295, 200)
    assert s["n"] == 200 and s["correct"] == 194 and s["ci95"][0] < 0.97 < s["ci95"][1]
    assert format_accuracy(0.9700000286102295, 200) == "97.0% (194/200, 95% CI 93.6-98.6%)"
    assert accuracy_summary(0.5, 0)["ci95"] is None and format_accuracy(0.5, 0) == "n/a (0 images)"


def test_sampling_note_uses_the_reference_row():
    rows = [{"name": "keras", "n": 200, "accuracy": 0.97, "accuracy_ci95": list(wilson_interval(194, 200))},
            {"name": "int8", "n": 200, "accuracy": 0.965, "accuracy_ci95": list(wilson_interval(193, 200))}]
    note = sampling_note(rows)
    assert "200 images" in note and "0.5 points" in note and "keras accuracy 97.0%" in note and "93.6-98.6%" in note
    assert sampling_note([]) == "" and sampling_note([{"name": "x", "n": 0, "accuracy": None}]) == ""


def test_paired_drop_interval():
    from edgetune.stats import paired_drop_interval

    assert paired_drop_interval(0, 0, 100) == (0.0, 0.0, 0.0)
    drop, lo, hi = paired_drop_interval(6, 2, 1000)  # lost 6, gained 2: drop 0.4 points
    assert drop == pytest.approx(0.004) and lo < 0 < drop < hi < 0.008
    drop, lo, hi = paired_drop_interval(30, 0, 1000)  # 30 lost, none gained: clearly a drop
    assert drop == pytest.approx(0.03) and lo > 0.02 and hi == pytest.approx(0.03)
    assert paired_drop_interval(0, 0, 0) is None


def test_images_to_decide():
    from edgetune.stats import images_to_decide

    n = images_to_decide(0.99, 0.97)
    lo, _ = wilson_interval(int(round(0.99 * n)), n)
    assert lo >= 0.97 and wilson_interval(int(round(0.99 * (n // 2))), n // 2)[0] < 0.97
    n = images_to_decide(0.95, 0.97)
    assert wilson_interval(int(round(0.95 * n)), n)[1] < 0.97
    assert images_to_decide(0.97, 0.97) is None
