"""Closed forms of the linear interpolating model (float64 numpy).

Model (docs/linear_theory.md has the derivation):

* inputs ``x ~ N(0, Sigma)`` in ``R^d``, a fixed base training set ``X`` ``[n, d]`` with ``d > n``;
  labels ``y = sign(x . w_star)`` in {-1, +1};
* the randomness across shadow models is Gaussian label noise on the base set,
  ``y_train = y + sigma * eps``, ``eps ~ N(0, I_n)``;
* a learner returns the minimum-G-norm interpolator ``w_G = argmin w'Gw s.t. Xw = y_train``,
  ``w_G = A_G y_train`` with ``A_G = G^-1 X' (X G^-1 X')^-1``; SGD from zero: ``G = I``; SAM
  (the paper's model): ``G = I + eta * Sigma``;
* the membership signal is the margin ``s = y_k * x_k . w`` of target ``(x_k, y_k)``. A member is
  interpolated, so ``s = 1`` exactly; a non-member has ``s ~ N(m_k, v_k)`` with
  ``m_k = y_k x_k' A_G y`` and ``v_k = sigma^2 |A_G' x_k|^2``.

Attacks, all targets pooled (as jaxsam pools its M targets):

* confidence (threshold on ``s``, higher = member): advantage ``1 - mean_k Q((1 - m_k)/sqrt(v_k))``
  where ``Q`` is the standard normal upper tail;
* likelihood ratio (offline LiRA's one-sided test against the exact OUT Gaussian of each target,
  score ``z = (s - m_k) / sqrt(v_k)``): members sit at ``z_k = (1 - m_k)/sqrt(v_k)``, non-members
  are exactly ``N(0, 1)``; advantage ``max_t [#{z_k >= t}/K - Q(t)]``, attained at some ``z_k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr


def upper_tail(x: np.ndarray) -> np.ndarray:
    """Standard normal upper tail ``Q(x) = P[N(0, 1) > x]``."""
    return ndtr(-np.asarray(x, np.float64))


def interpolation_operator(x_train: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``A_G = G^-1 X' (X G^-1 X')^-1``: float64 ``[d, n]``, maps labels to the min-G-norm fit."""
    ginv_xt = np.linalg.solve(g, x_train.T)  # [d, n]
    return ginv_xt @ np.linalg.inv(x_train @ ginv_xt)


def min_g_norm_interpolator(x_train: np.ndarray, y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Explicit formula ``w = G^-1 X' (X G^-1 X')^-1 y``: float64 ``[d]``."""
    ginv_xt = np.linalg.solve(g, x_train.T)
    return ginv_xt @ np.linalg.solve(x_train @ ginv_xt, y)


def min_g_norm_kkt(x_train: np.ndarray, y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The same interpolator from the KKT system of ``min w'Gw/2 s.t. Xw = y`` (a check).

    ``[[G, X'], [X, 0]] [w; lam] = [0; y]``, solved by least squares.
    """
    n, d = x_train.shape
    kkt = np.block([[g, x_train.T], [x_train, np.zeros((n, n))]])
    rhs = np.concatenate([np.zeros(d), y])
    return np.linalg.lstsq(kkt, rhs, rcond=None)[0][:d]


def sam_metric(sigma: np.ndarray, eta: float) -> np.ndarray:
    """The paper's SAM geometry ``G = I + eta * Sigma``: float64 ``[d, d]``."""
    return np.eye(sigma.shape[0]) + eta * sigma


@dataclass(frozen=True)
class NonMember:
    """Exact distribution of the non-member margin of each of K targets."""

    mean: np.ndarray  # [K] m_k
    var: np.ndarray  # [K] v_k (margin units squared)


def nonmember_margin(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_target: np.ndarray,
    y_target: np.ndarray,
    g: np.ndarray,
    noise: float,
) -> NonMember:
    """Mean and variance of ``y_k x_k . w_G`` over the label noise, for every target.

    Args:
      x_train: ``[n, d]`` base set; y_train: ``[n]`` clean labels; x_target: ``[K, d]``;
      y_target: ``[K]`` in {-1, +1}; g: ``[d, d]`` metric; noise: label-noise std ``sigma``.
    """
    a = interpolation_operator(x_train, g)  # [d, n]
    proj = x_target @ a  # [K, n]: row k is A_G' x_k
    return NonMember(mean=y_target * (proj @ y_train), var=noise**2 * np.sum(proj**2, axis=1))


def confidence_advantage(nm: NonMember) -> float:
    """Pooled advantage (max TPR - FPR) of the margin threshold; members sit at margin 1."""
    return float(1.0 - np.mean(upper_tail((1.0 - nm.mean) / np.sqrt(nm.var))))


def member_z(nm: NonMember) -> np.ndarray:
    """Members' LR score ``z_k = (1 - m_k) / sqrt(v_k)`` (non-members: exactly N(0, 1))."""
    return (1.0 - nm.mean) / np.sqrt(nm.var)


def lr_advantage(nm: NonMember) -> float:
    """Pooled advantage of the one-sided likelihood-ratio test (offline LiRA, exact Gaussians)."""
    z = np.sort(member_z(nm))[::-1]
    tpr = np.arange(1, z.size + 1) / z.size  # threshold at the i-th largest member score
    return float(max(0.0, np.max(tpr - upper_tail(z))))


def nonmember_accuracy(nm: NonMember) -> float:
    """Probability that a non-member is classified correctly (margin > 0), target-averaged."""
    return float(np.mean(upper_tail(-nm.mean / np.sqrt(nm.var))))


@dataclass(frozen=True)
class Problem:
    """One draw of the linear problem (all float64)."""

    sigma: np.ndarray  # [d, d] population covariance (diagonal here)
    w_star: np.ndarray  # [d]
    x_train: np.ndarray  # [n, d]
    y_train: np.ndarray  # [n] clean labels in {-1, +1}
    x_target: np.ndarray  # [K, d]
    y_target: np.ndarray  # [K]
    noise: float


def make_problem(
    *,
    d: int = 200,
    n: int = 40,
    n_targets: int = 400,
    n_major: int = 10,
    major_var: float = 10.0,
    minor_var: float = 0.1,
    noise: float = 0.3,
    seed: int = 0,
) -> Problem:
    """A two-level spectrum: ``n_major`` high-variance "majority" directions, the rest minor.

    The teacher puts equal total signal on both blocks, so the label also depends on the minor,
    low-variance (atypical) directions.
    """
    if d <= n:
        raise ValueError(f"need d > n for interpolation, got d={d}, n={n}; raise d or lower n.")
    rng = np.random.default_rng(seed)
    var = np.full(d, minor_var)
    var[:n_major] = major_var
    w_star = np.zeros(d)
    w_star[:n_major] = rng.normal(size=n_major) / np.sqrt(n_major * major_var)
    w_star[n_major:] = rng.normal(size=d - n_major) / np.sqrt((d - n_major) * minor_var)

    def draw(k):
        x = rng.normal(size=(k, d)) * np.sqrt(var)
        y = np.sign(x @ w_star)
        return x, np.where(y == 0, 1.0, y)

    x_train, y_train = draw(n)
    x_target, y_target = draw(n_targets)
    return Problem(np.diag(var), w_star, x_train, y_train, x_target, y_target, noise)


def closed_form_row(p: Problem, eta: float) -> dict:
    """All closed-form quantities for one eta (eta = 0 is SGD's min-norm interpolator)."""
    nm = nonmember_margin(
        p.x_train, p.y_train, p.x_target, p.y_target, sam_metric(p.sigma, eta), p.noise
    )
    return {
        "eta": float(eta),
        "nonmember_var_mean": float(nm.var.mean()),
        "nonmember_var_median": float(np.median(nm.var)),
        "nonmember_margin_mean": float(nm.mean.mean()),
        "nonmember_accuracy": nonmember_accuracy(nm),
        "confidence_advantage": confidence_advantage(nm),
        "lr_advantage": lr_advantage(nm),
    }
