import pytest

from solo.analysis import swamping_case_study, swamping_threshold
from solo.momentum import PRINTED_TABLE, adjusted_beta


def test_momentum_rule_reproduces_printed_table():
    for target, row in PRINTED_TABLE.items():
        for ref, printed in row.items():
            assert adjusted_beta(0.9, target, ref) == pytest.approx(printed, abs=0.015)


def test_momentum_rule_identity_and_errors():
    assert adjusted_beta(0.9, 4, 4) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="beta"):
        adjusted_beta(1.0, 4, 5)
    with pytest.raises(ValueError, match="bits"):
        adjusted_beta(0.9, 1, 5)


def test_signal_swamping_case_study():
    # docs/method.md section 5: 2-bit DE is stuck at 1.0 at beta 0.9, the 2-bit log quantizer
    # tracks the true EMA (0.5) like fp32.
    assert swamping_case_study("de", 2, 0.9) > 0.99
    assert swamping_case_study("log", 2, 0.9) == pytest.approx(0.5, abs=0.07)
    assert swamping_case_study("fp32", 2, 0.9) == pytest.approx(0.5, abs=0.02)
    # linear with zero: below its threshold (0.833 at 2 bits) it moves, above it is stuck
    assert swamping_case_study("linear0", 2, 0.8) < 0.7
    assert swamping_case_study("linear0", 2, 0.85) > 0.99
    assert swamping_case_study("linear0", 4, 0.95) < 0.6
    assert swamping_case_study("log", 2, 0.99) == pytest.approx(0.68, abs=0.05)


def test_swamping_thresholds_derive_from_the_codebooks():
    """The Corollary's thresholds (docs/method.md section 5, as the paper prints them) come out of the codebooks'
    half-gaps (scripts/make_figures.py plots these, no longer hard-coded numbers)."""
    printed = {"linear0": {2: 0.833, 3: 0.929, 4: 0.967}, "de": {2: 0.837, 3: 0.933, 4: 0.966}}
    for q, row in printed.items():
        for bits, beta in row.items():
            assert swamping_threshold(q, bits) == pytest.approx(beta, abs=1e-3), (q, bits)
    # and the case study agrees: linear (with 0) moves just below its threshold, stuck above
    for bits in (2, 3):
        t = swamping_threshold("linear0", bits)
        assert swamping_case_study("linear0", bits, t - 0.02) < 0.9
        assert swamping_case_study("linear0", bits, t + 0.01) > 0.99
    with pytest.raises(ValueError, match="quantizer"):
        swamping_threshold("log", 2)
