"""The book's one decision rule (mmsa.verdict) on hand-worked intervals."""
import pytest

from mmsa.verdict import decide, describe, mde


def test_decide_by_the_side_of_zero_the_interval_excludes():
    assert decide(0.01, 0.05, +1) == "reproduced"
    assert decide(-0.05, -0.01, -1) == "reproduced"
    assert decide(0.01, 0.05, -1) == "contradicted"
    assert decide(-0.05, -0.01, +1) == "contradicted"
    assert decide(-0.01, 0.05, +1) == "inconclusive"
    assert decide(0.0, 0.05, +1) == "inconclusive"      # touching zero does not exclude it


def test_mde_from_a_hand_worked_interval():
    # half-width 1.96 -> SE = 1 -> MDE = 1.95996 + 0.84162 = 2.80158
    assert mde(-1.959964, 1.959964) == pytest.approx(2.80158, abs=1e-4)
    assert mde(3.0, 3.0) == 0.0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="expected_sign"):
        decide(0, 1, 0)
    with pytest.raises(ValueError, match="low <= high"):
        mde(1.0, 0.0)


def test_describe_names_verdict_interval_and_mde():
    line = describe(0.03, 0.01, 0.05, +1)
    assert line.startswith("reproduced: +0.030 [+0.010, +0.050]") and "minimum detectable effect 0.029" in line


def test_paired_difference_reports_the_mde_of_its_bootstrap_interval():
    import numpy as np

    from mmsa.robustness import paired_difference

    rng = np.random.default_rng(0)
    a = rng.random((5, 200))
    d = paired_difference(a + 0.1, a, n_boot=500)
    assert d["mde"] == pytest.approx(mde(d["boot_low"], d["boot_high"]))
    assert d["boot_low"] > 0
