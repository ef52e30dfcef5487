"""Data-efficiency multipliers: how much target data a schedule is worth.

Method (Kotha & Liang 2026, "Replaying pre-training data improves fine-tuning"): train reference
runs on target amounts x (e.g. 1, 2, 4, 8, 16 units, no replay) and record their final target
loss L. Fit the reference curve

    L(x) = A / x^B + C

and invert it, x_eq(L) = (A / (L - C))^(1/B): the amount of target data a plain run would need to
reach loss L. A schedule S that reaches L_S is then worth

    multiplier = x_eq(L_S) / x_eq(L_S0)

times the data of a baseline schedule S0 that reaches L_S0 (> 1 means S is more data-efficient).

Fallback: with few, noisy points the power law often degenerates. B collapses towards 0 while A
and C run off to large values of opposite sign, which is the curve being log-linear in x. Then
(and when the fit fails, or when a loss to invert is at or below the asymptote C, where x_eq is
undefined) we fit L = alpha - beta * ln(x) by least squares instead; its inverse is
x_eq(L) = exp((alpha - L) / beta), so the multiplier is exp((L_S0 - L_S) / beta). Both routes
agree where the power law is nearly log-linear. `ReferenceFit.method` says which route the fit
chose; `ReferenceFit.method_for(...)` says which one is used for particular losses.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

POWER = "power"
LOG_LINEAR = "log-linear"

# Below this exponent the power law is numerically a log-linear curve (A and C huge and
# cancelling), and inverting it amplifies noise, so the log-linear fit is used instead.
MIN_EXPONENT = 1e-3
# Starting point from the paper; the fit needs many evaluations when B heads towards 0.
_P0 = (0.1, 0.2, 2.0)
_MAXFEV = 100_000


@dataclass(frozen=True)
class ReferenceFit:
    """A fitted reference curve, loss as a function of target data.

    A, B, C: power-law parameters of L = A / x^B + C (nan if the power fit failed).
    alpha, beta: log-linear parameters of L = alpha - beta * ln(x) (always fitted).
    method: "power" or "log-linear", the route chosen for this reference.
    """

    A: float
    B: float
    C: float
    alpha: float
    beta: float
    method: str

    def method_for(self, *losses: float) -> str:
        """The route used to invert these losses together.

        The power law is only invertible above its asymptote C; if any loss is at or below it,
        all of them go through the log-linear fit so a ratio never mixes the two curves.
        """
        if self.method == POWER and all(loss > self.C for loss in losses):
            return POWER
        return LOG_LINEAR

    def equivalent_data(self, loss: float, method: str | None = None) -> float:
        """x_eq(loss): target data a plain run needs to reach `loss`, in reference units.

        `method` forces a route; by default it is `method_for(loss)`.
        """
        _check_finite(loss, "loss")
        method = method or self.method_for(loss)
        if method == POWER:
            if self.method != POWER:
                raise ValueError("this reference has no usable power-law fit")
            if loss <= self.C:
                raise ValueError(
                    f"loss {loss} is at or below the power-law asymptote C={self.C}; "
                    "no amount of data reaches it on this curve"
                )
            return (self.A / (loss - self.C)) ** (1.0 / self.B)
        if method == LOG_LINEAR:
            return math.exp((self.alpha - loss) / self.beta)
        raise ValueError(f"unknown method {method!r}; expected {POWER!r} or {LOG_LINEAR!r}")


def fit_reference(xs: Sequence[float], losses: Sequence[float]) -> ReferenceFit:
    """Fit the reference curve to (target amount, final loss) points from runs without replay."""
    x, y = _check_reference(xs, losses)

    # The log-linear fit is cheap and always well defined, so it is kept as the fallback.
    slope, alpha = np.polyfit(np.log(x), y, 1)
    beta = -float(slope)
    if not beta > 0:
        raise ValueError(
            "reference losses do not decrease with target data (log-linear slope "
            f"{-beta:.4g}); a data-efficiency multiplier is meaningless for this curve"
        )

    A, B, C = _fit_power(x, y)
    usable = all(math.isfinite(v) for v in (A, B, C)) and A > 0 and B >= MIN_EXPONENT
    return ReferenceFit(
        A=A, B=B, C=C, alpha=float(alpha), beta=beta, method=POWER if usable else LOG_LINEAR
    )


def efficiency_multiplier(fit: ReferenceFit, candidate_loss: float, baseline_loss: float) -> float:
    """How many times more target data the candidate schedule is worth than the baseline.

    x_eq(candidate_loss) / x_eq(baseline_loss); > 1 when the candidate reaches a lower loss.
    """
    _check_finite(candidate_loss, "candidate_loss")
    _check_finite(baseline_loss, "baseline_loss")
    method = fit.method_for(candidate_loss, baseline_loss)
    if method == LOG_LINEAR:
        # Closed form of the ratio: alpha cancels, and it avoids overflow in exp(alpha / beta).
        return math.exp((baseline_loss - candidate_loss) / fit.beta)
    return fit.equivalent_data(candidate_loss, method) / fit.equivalent_data(baseline_loss, method)


def parse_reference(text: str) -> tuple[list[float], list[float]]:
    """Parse "16:2.99,8:3.16,..." (x:loss pairs) into (xs, losses).

    Blank items (a trailing comma) are skipped; anything else malformed raises ValueError naming
    the item. Whole-curve checks (at least 3 points) are left to `fit_reference`.
    """
    xs: list[float] = []
    losses: list[float] = []
    seen: set[float] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) != 2:
            raise ValueError(f"reference item {item!r} is not of the form x:loss")
        try:
            x, loss = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"reference item {item!r}: x and loss must be numbers") from None
        if not (math.isfinite(x) and x > 0):
            raise ValueError(f"reference item {item!r}: x must be a positive number")
        if not math.isfinite(loss):
            raise ValueError(f"reference item {item!r}: loss must be finite")
        if x in seen:
            raise ValueError(f"reference item {item!r}: x={x:g} appears more than once")
        seen.add(x)
        xs.append(x)
        losses.append(loss)
    if not xs:
        raise ValueError("reference is empty; expected x:loss pairs like '16:2.99,8:3.16'")
    return xs, losses


def _fit_power(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    def curve(x, A, B, C):
        return A / x**B + C

    # Exploratory steps overflow and, with 3 points, the covariance is undefined; neither matters
    # because only the parameters are used, and they are checked afterwards.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            params, _ = curve_fit(curve, x, y, p0=_P0, maxfev=_MAXFEV)
        except (RuntimeError, ValueError, FloatingPointError):
            return math.nan, math.nan, math.nan
    A, B, C = (float(p) for p in params)
    return A, B, C


def _check_reference(xs: Sequence[float], losses: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(xs) != len(losses):
        raise ValueError(f"got {len(xs)} target amounts but {len(losses)} losses")
    if len(xs) < 3:
        raise ValueError(f"need at least 3 reference points to fit the curve, got {len(xs)}")
    x = np.asarray(xs, dtype=float)
    y = np.asarray(losses, dtype=float)
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ValueError(f"target amounts must be positive and finite, got {list(xs)}")
    if len(np.unique(x)) != len(x):
        raise ValueError(f"target amounts must be distinct, got {list(xs)}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"reference losses must be finite, got {list(losses)}")
    return x, y


def _check_finite(value: float, name: str) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


@dataclass(frozen=True)
class MultiplierSpread:
    """How far the reference curve's own scatter carries a multiplier (a residual bootstrap):
    `low`..`high` hold the middle `level` share of the resampled multipliers."""

    low: float
    high: float
    level: float
    resamples: int  # resamples that gave a multiplier
    degenerate_share: float  # of those, the share that went through the log-linear fallback


def multiplier_spread(
    xs: Sequence[float],
    losses: Sequence[float],
    candidate_loss: float,
    baseline_loss: float,
    *,
    resamples: int = 400,
    level: float = 0.9,
    seed: int = 0,
) -> MultiplierSpread | None:
    """Residual bootstrap of the reference fit: fit once, then refit `resamples` times to the
    fitted losses plus residuals drawn with replacement, and recompute the multiplier each time.
    (Resampling the points themselves would repeat x values, which the fit cannot take with as
    few as 3-5 reference runs.) A curve that passes through every point, as 3 points and 3
    parameters always do, has no scatter to resample: a zero-width spread says the points cannot
    tell. Deterministic for a seed; None when no resample could be fitted."""
    x, y = _check_reference(xs, losses)
    fit = fit_reference(x, y)
    predicted = np.array([_loss_at(fit, v) for v in x])
    residuals = y - predicted
    rng = np.random.default_rng(seed)
    values, degenerate = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # covariance and overflow warnings of hopeless resamples
        for _ in range(resamples):
            sample = predicted + rng.choice(residuals, size=len(residuals), replace=True)
            try:
                refit = fit_reference(x, sample)
                value = efficiency_multiplier(refit, candidate_loss, baseline_loss)
            except (ValueError, OverflowError, ZeroDivisionError):
                continue
            if math.isfinite(value):
                values.append(value)
                degenerate += refit.method_for(candidate_loss, baseline_loss) != POWER
    if not values:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return MultiplierSpread(
        low=float(low),
        high=float(high),
        level=level,
        resamples=len(values),
        degenerate_share=degenerate / len(values),
    )


def _loss_at(fit: ReferenceFit, x: float) -> float:
    """The fitted curve's loss at target amount x (the route the fit chose)."""
    if fit.method == POWER:
        return fit.A / x**fit.B + fit.C
    return fit.alpha - fit.beta * math.log(x)
