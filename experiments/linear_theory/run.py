"""The linear interpolating model: closed form vs Monte Carlo vs optax-trained SGD / SAM.

Command (about 30 s on a 2-core CPU)::

    python -m experiments.linear_theory.run --out runs/linear_theory

Prints two tables and writes ``linear_theory.json`` and ``linear_theory.png`` under ``--out``:

1. for each eta, the closed form of the min-G-norm interpolator (G = I + eta * Sigma): mean
   non-member margin variance, confidence and likelihood-ratio attack advantages and non-member
   accuracy, each beside its Monte Carlo estimate over label-noise draws;
2. optax-trained models (R per learner): gradient descent, ``G^-1``-preconditioned descent and
   the SAM transform, with their distance to the min-norm and min-G-norm interpolators, the
   fraction of the weight in the null space of X, and the measured non-member variance.

Expected: Monte Carlo within sampling error of the closed form; the variance falls and both
advantages rise with eta; GD and SAM land on the min-norm interpolator, the preconditioned
descent on the min-G-norm one (see docs/linear_theory.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from experiments.linear_theory import theory as th

ETAS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def monte_carlo_row(p: th.Problem, eta: float, draws: int, seed: int) -> dict:
    """Monte Carlo estimates of :func:`theory.closed_form_row` from exact interpolators."""
    a = th.interpolation_operator(p.x_train, th.sam_metric(p.sigma, eta))
    rng = np.random.default_rng(seed)
    y = p.y_train[None] + p.noise * rng.normal(size=(draws, p.y_train.size))  # [R, n]
    s = p.y_target[:, None] * ((p.x_target @ a) @ y.T)  # [K, R] non-member margins
    nm = th.nonmember_margin(
        p.x_train, p.y_train, p.x_target, p.y_target, th.sam_metric(p.sigma, eta), p.noise
    )
    z_out = (s - nm.mean[:, None]) / np.sqrt(nm.var)[:, None]
    z_in = np.sort(th.member_z(nm))[::-1]
    tpr = np.arange(1, z_in.size + 1) / z_in.size
    z_sorted = np.sort(z_out.ravel())
    fpr = 1.0 - np.searchsorted(z_sorted, z_in, side="left") / z_sorted.size
    return {
        "eta": float(eta),
        "nonmember_var_mean": float(s.var(axis=1, ddof=1).mean()),
        "nonmember_margin_mean": float(s.mean()),
        "nonmember_accuracy": float((s > 0).mean()),
        "confidence_advantage": float(1.0 - (s >= 1.0).mean()),
        "lr_advantage": float(max(0.0, np.max(tpr - fpr))),
    }


def member_margin_check(p: th.Problem, eta: float, n_check: int = 20) -> float:
    """Max |margin - 1| of members: each target added to the base set, exact interpolator."""
    g = th.sam_metric(p.sigma, eta)
    worst = 0.0
    for k in range(min(n_check, p.y_target.size)):
        x = np.vstack([p.x_train, p.x_target[k]])
        y = np.append(p.y_train, p.y_target[k])
        w = th.min_g_norm_interpolator(x, y, g)
        worst = max(worst, abs(p.y_target[k] * p.x_target[k] @ w - 1.0))
    return float(worst)


def trained_rows(p: th.Problem, *, models: int, steps: int, etas_pre, rho: float, seed: int):
    """Trains ``models`` linear models per learner with optax and compares with theory."""
    from experiments.linear_theory import train as tr

    rng = np.random.default_rng(seed)
    n, d = p.x_train.shape
    y = p.y_train[None] + p.noise * rng.normal(size=(models, n))
    null = np.eye(d) - np.linalg.pinv(p.x_train) @ p.x_train
    lmax = np.linalg.eigvalsh(p.x_train @ p.x_train.T / n).max()
    _, sam_impl = tr.sam_transform(1.0, rho)
    learners = [("gd", 0.0, {"method": "gd", "lr": 1.0 / lmax})]
    learners.append(
        (f"sam rho={rho}", 0.0, {"method": "sam", "lr": 1.0 / lmax, "rho": rho, "cosine": True})
    )
    for eta in etas_pre:
        ginv = np.linalg.inv(th.sam_metric(p.sigma, eta))
        lg = np.linalg.eigvalsh(p.x_train @ ginv @ p.x_train.T / n).max()
        learners.append(
            (f"precond eta={eta}", eta, {"method": "precond", "lr": 1.0 / lg, "ginv": ginv})
        )
    rows = []
    w_min = np.stack([th.min_g_norm_interpolator(p.x_train, yr, np.eye(d)) for yr in y])
    for name, eta, kw in learners:
        w = tr.train(p.x_train, y, steps=steps, **kw).astype(np.float64)
        g = th.sam_metric(p.sigma, eta if eta else max(etas_pre))
        w_g = np.stack([th.min_g_norm_interpolator(p.x_train, yr, g) for yr in y])
        s = p.y_target[:, None] * (p.x_target @ w.T)  # [K, R]
        rel = lambda a, b: float(np.mean(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))
        nm = th.nonmember_margin(
            p.x_train, p.y_train, p.x_target, p.y_target, th.sam_metric(p.sigma, eta), p.noise
        )
        rows.append(
            {
                "learner": name,
                "theory_eta": eta,
                "train_residual_max": float(np.abs(w @ p.x_train.T - y).max()),
                "rel_dist_min_norm": rel(w, w_min),
                "rel_dist_min_g_norm": rel(w, w_g),
                "min_g_norm_eta": float(eta if eta else max(etas_pre)),
                "null_space_fraction": float(
                    np.mean(np.linalg.norm(w @ null, axis=1) / np.linalg.norm(w, axis=1))
                ),
                "nonmember_var_mean": float(s.var(axis=1, ddof=1).mean()),
                "nonmember_var_theory": float(nm.var.mean()),
                "confidence_advantage": float(1.0 - (s >= 1.0 - 1e-3).mean()),
                "confidence_advantage_theory": th.confidence_advantage(nm),
            }
        )
    return rows, sam_impl


def _plot(closed, mc, trained, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eta = np.array([r["eta"] for r in closed])
    x = np.where(eta > 0, eta, eta[eta > 0].min() / 3)  # eta = 0 drawn at the left edge
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    ax.plot(x, [r["nonmember_var_mean"] for r in closed], "k-", label="closed form")
    ax.plot(x, [r["nonmember_var_mean"] for r in mc], "o", mfc="none", label="Monte Carlo")
    for r in trained:
        xe = r["theory_eta"] if r["theory_eta"] > 0 else x[0]
        ax.plot(
            xe,
            r["nonmember_var_mean"],
            "x" if "sam" in r["learner"] else "s",
            ms=8,
            label=f"trained: {r['learner']}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("eta  (G = I + eta Sigma; leftmost point = eta 0, SGD)")
    ax.set_ylabel("mean non-member margin variance")
    ax.legend(fontsize=7)
    ax = axes[1]
    for key, style, label in [
        ("confidence_advantage", "-", "confidence"),
        ("lr_advantage", "--", "likelihood ratio"),
    ]:
        ax.plot(x, [r[key] for r in closed], "k" + style, label=f"{label}: closed form")
        ax.plot(x, [r[key] for r in mc], "o", mfc="none", label=f"{label}: Monte Carlo")
    ax.set_xscale("log")
    ax.set_xlabel("eta")
    ax.set_ylabel("attack advantage (max TPR - FPR), targets pooled")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/linear_theory", help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=4000, help="Monte Carlo label-noise draws")
    ap.add_argument("--models", type=int, default=64, help="trained models per learner")
    ap.add_argument("--steps", type=int, default=4000, help="full-batch steps per model")
    ap.add_argument("--rho", type=float, default=0.05)
    ap.add_argument("--d", type=int, default=200)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--targets", type=int, default=400)
    args = ap.parse_args(argv)
    t0 = time.time()
    p = th.make_problem(d=args.d, n=args.n, n_targets=args.targets, seed=args.seed)
    closed = [th.closed_form_row(p, e) for e in ETAS]
    mc = [monte_carlo_row(p, e, args.draws, args.seed + 1) for e in ETAS]
    member_err = max(member_margin_check(p, e) for e in ETAS)
    trained, sam_impl = trained_rows(
        p,
        models=args.models,
        steps=args.steps,
        etas_pre=(1.0, 10.0),
        rho=args.rho,
        seed=args.seed + 2,
    )
    print(
        f"linear model: d={args.d} n={args.n} targets={args.targets} "
        f"noise={p.noise} draws={args.draws}; members' max |margin - 1| = {member_err:.1e}"
    )
    print(
        f"{'eta':>6} | {'var (cf / mc)':>19} | {'conf adv (cf / mc)':>19} | "
        f"{'LR adv (cf / mc)':>17} | {'acc (cf / mc)':>15}"
    )
    for c, m in zip(closed, mc, strict=True):
        print(
            f"{c['eta']:6.1f} | {c['nonmember_var_mean']:.5f} / {m['nonmember_var_mean']:.5f}"
            f" | {c['confidence_advantage']:.4f} / {m['confidence_advantage']:.4f}  "
            f" | {c['lr_advantage']:.4f} / {m['lr_advantage']:.4f}"
            f" | {c['nonmember_accuracy']:.3f} / {m['nonmember_accuracy']:.3f}"
        )
    print(f"\ntrained with optax ({args.models} models x {args.steps} steps; SAM: {sam_impl})")
    print(
        f"{'learner':>18} | {'resid':>7} | {'d(min-norm)':>11} | {'d(min-G)':>8} | "
        f"{'null frac':>9} | {'var (trained / theory)':>22} | conf adv (trained / theory)"
    )
    for r in trained:
        print(
            f"{r['learner']:>18} | {r['train_residual_max']:.1e} | {r['rel_dist_min_norm']:11.2e}"
            f" | {r['rel_dist_min_g_norm']:8.2e} | {r['null_space_fraction']:9.2e}"
            f" | {r['nonmember_var_mean']:.5f} / {r['nonmember_var_theory']:.5f}     "
            f" | {r['confidence_advantage']:.4f} / {r['confidence_advantage_theory']:.4f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "config": vars(args) | {"noise": p.noise, "etas": list(ETAS)},
        "member_margin_max_error": member_err,
        "closed_form": closed,
        "monte_carlo": mc,
        "trained": trained,
        "sam_impl": sam_impl,
        "seconds": time.time() - t0,
    }
    (out / "linear_theory.json").write_text(json.dumps(result, indent=2))
    _plot(closed, mc, trained, out / "linear_theory.png")
    print(
        f"\nwrote {out / 'linear_theory.json'} and {out / 'linear_theory.png'} "
        f"({result['seconds']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
