import math

import pytest

from replay_engine.efficiency import (
    LOG_LINEAR,
    POWER,
    ReferenceFit,
    efficiency_multiplier,
    fit_reference,
    parse_reference,
)

XS = [16, 8, 4, 2, 1]
# Reference curves from Kotha & Liang 2026 (final target loss, no replay).
FINEMATH = [2.99478, 3.16164, 3.39593, 3.49087, 3.62532]
FLAN = [3.2712, 3.27876, 3.37226, 3.41444, 3.54749]


def test_finemath_falls_back_to_log_linear():
    fit = fit_reference(XS, FINEMATH)
    # The power law degenerates (B ~ 1e-4), so the log-linear fit is used.
    assert fit.B < 1e-3
    assert fit.method == LOG_LINEAR
    assert fit.beta > 0


def test_finemath_replay_multiplier():
    fit = fit_reference(XS, FINEMATH)
    assert round(efficiency_multiplier(fit, 3.90261, 3.99417), 2) == 1.49


def test_finemath_both_routes_agree():
    # Where the power law degenerates it is effectively log-linear: inverting it directly gives
    # the same multiplier.
    fit = fit_reference(XS, FINEMATH)
    power = fit.A / (3.90261 - fit.C), fit.A / (3.99417 - fit.C)
    direct = (power[0] / power[1]) ** (1 / fit.B)
    assert round(direct, 2) == 1.49


def test_flan_uses_power_law():
    fit = fit_reference(XS, FLAN)
    assert fit.method == POWER
    assert fit.B > 1e-3
    assert fit.A > 0


def test_flan_replay_multiplier():
    fit = fit_reference(XS, FLAN)
    assert round(efficiency_multiplier(fit, 3.51, 3.65354), 2) == 1.87


def test_flan_mid_training_replay_multiplier():
    fit = fit_reference(XS, FLAN)
    assert round(efficiency_multiplier(fit, 3.35773, 3.44407), 2) == 2.06


def test_exact_power_law_recovers_parameters_and_round_trips():
    A, B, C = 0.5, 0.5, 2.0
    losses = [A / x**B + C for x in XS]
    fit = fit_reference(XS, losses)
    assert fit.method == POWER
    assert fit.A == pytest.approx(A, rel=1e-4)
    assert fit.B == pytest.approx(B, rel=1e-4)
    assert fit.C == pytest.approx(C, rel=1e-4)
    for x, loss in zip(XS, losses, strict=True):
        assert fit.equivalent_data(loss) == pytest.approx(x, rel=1e-4)
    # A multiplier is then a ratio of data amounts on the curve.
    assert efficiency_multiplier(fit, losses[0], losses[2]) == pytest.approx(4.0, rel=1e-4)


def test_exact_log_linear_round_trips():
    alpha, beta = 4.0, 0.2
    losses = [alpha - beta * math.log(x) for x in XS]
    fit = fit_reference(XS, losses)
    assert fit.alpha == pytest.approx(alpha)
    assert fit.beta == pytest.approx(beta)
    for x, loss in zip(XS, losses, strict=True):
        assert fit.equivalent_data(loss, LOG_LINEAR) == pytest.approx(x, rel=1e-6)


@pytest.mark.parametrize("losses", [FINEMATH, FLAN])
def test_identical_losses_give_one(losses):
    fit = fit_reference(XS, losses)
    assert efficiency_multiplier(fit, 3.4, 3.4) == pytest.approx(1.0)


@pytest.mark.parametrize("losses", [FINEMATH, FLAN])
def test_lower_candidate_loss_is_worth_more(losses):
    fit = fit_reference(XS, losses)
    assert efficiency_multiplier(fit, 3.3, 3.4) > 1
    assert efficiency_multiplier(fit, 3.4, 3.3) < 1


def test_loss_below_asymptote_uses_log_linear():
    fit = fit_reference(XS, FLAN)
    below = fit.C - 0.05
    assert fit.method_for(below, 3.4) == LOG_LINEAR
    expected = math.exp((3.4 - below) / fit.beta)
    assert efficiency_multiplier(fit, below, 3.4) == pytest.approx(expected)
    with pytest.raises(ValueError, match="asymptote"):
        fit.equivalent_data(below, POWER)


def test_fit_is_frozen():
    fit = fit_reference(XS, FLAN)
    assert isinstance(fit, ReferenceFit)
    with pytest.raises(AttributeError):
        fit.method = LOG_LINEAR


@pytest.mark.parametrize(
    ("xs", "losses", "message"),
    [
        ([1, 2], [3.0, 2.9], "at least 3"),
        ([1, 2, 4], [3.0, 2.9], "3 target amounts but 2 losses"),
        ([0, 2, 4], [3.0, 2.9, 2.8], "positive"),
        ([-1, 2, 4], [3.0, 2.9, 2.8], "positive"),
        ([1, 2, 2], [3.0, 2.9, 2.8], "distinct"),
        ([1, 2, 4], [3.0, float("nan"), 2.8], "finite"),
        ([1, 2, 4], [3.0, float("inf"), 2.8], "finite"),
        ([1, 2, 4], [2.8, 2.9, 3.0], "do not decrease"),
    ],
)
def test_fit_reference_validation(xs, losses, message):
    with pytest.raises(ValueError, match=message):
        fit_reference(xs, losses)


def test_multiplier_rejects_non_finite_loss():
    fit = fit_reference(XS, FLAN)
    with pytest.raises(ValueError, match="candidate_loss"):
        efficiency_multiplier(fit, float("nan"), 3.4)


def test_parse_reference():
    xs, losses = parse_reference("16:2.99478, 8:3.16164,4:3.39593 ,2:3.49087,1:3.62532,")
    assert xs == [16.0, 8.0, 4.0, 2.0, 1.0]
    assert losses == FINEMATH
    fit = fit_reference(xs, losses)
    assert round(efficiency_multiplier(fit, 3.90261, 3.99417), 2) == 1.49


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("16:2.99,8", "'8'"),
        ("16:2.99,8:3.1:2", "'8:3.1:2'"),
        ("16:2.99,eight:3.16", "'eight:3.16'"),
        ("16:2.99,8:abc", "'8:abc'"),
        ("16:2.99,0:3.16", "'0:3.16'"),
        ("16:2.99,-2:3.16", "'-2:3.16'"),
        ("16:2.99,8:nan", "'8:nan'"),
        ("16:2.99,16:3.16", "'16:3.16'"),
    ],
)
def test_parse_reference_names_bad_item(text, bad):
    with pytest.raises(ValueError, match=bad):
        parse_reference(text)


@pytest.mark.parametrize("text", ["", "  ", ","])
def test_parse_reference_empty(text):
    with pytest.raises(ValueError, match="empty"):
        parse_reference(text)
