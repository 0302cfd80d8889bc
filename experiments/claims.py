"""The paper's four claims, decided on one study by a paired bootstrap over pool examples.

``python -m experiments.claims EXP_DIR`` reads the finished runs of an experiment directory
(``EXP_DIR/seed{s}/{arm}/``, what :mod:`experiments.run` writes), pairs the baseline arm (SGD)
with the other arm (SAM) seed by seed (same masks, same initial keys: checked), and decides each
claim of arXiv 2310.00488 from a 95 % paired-bootstrap interval of the difference SAM - SGD:

1. ``leaks_more``: SAM leaks more at equal or better accuracy. Statistic: LiRA online AUC.
   *holds* when its interval is above 0 and the held-out (else OUT) accuracy interval is not
   below 0; *reverses* when the AUC interval is below 0; *not significant* when it holds 0;
   *holds at lower accuracy* when SAM leaks more but is less accurate.
2. ``memorizes_atypical``: SAM memorizes atypical examples more. Statistic: mean Feldman-Zhang
   memorization over the atypical group (the top 10 % of examples by the two arms' mean
   memorization, ranked with a seeded tie-break, so the group is the same for both arms and
   favours neither).
3. ``out_variance_lower``: SAM's OUT confidence varies less. Statistic: the median over
   examples of the OUT logit-scaled-confidence variance. *holds* when the interval is below 0.
4. ``linear_theory``: the linear theory's prediction, lower OUT variance goes with a higher
   likelihood-ratio advantage. *holds* when claim 3 holds and offline LiRA's AUC interval is
   above 0; *reverses* when the variance is lower but offline LiRA's AUC is lower;
   *not significant* otherwise.

Beside the claims it reports, with the same paired intervals, the statistics a study section
needs: train (IN), OUT and held-out accuracy, AUC and TPR at 1 % and 0.1 % FPR of LiRA online,
LiRA offline and RMIA (the report's TPR definition: the ROC interpolated between adjacent score
levels), and the typical group's mean memorization.

A model that failed or collapsed in either arm of a seed (train accuracy below 0.5,
``--min-train-accuracy``) is left out of both arms of that seed, and the output says which.

The bootstrap resamples pool examples with replacement (every model's entry for an example
together), the same resample for both arms and every seed, so the interval is of the paired,
seed-averaged difference. Held-out accuracy resamples the held-out examples the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxsam import metrics
from jaxsam.analysis import mechanism_arrays
from jaxsam.errors import DataError, JaxsamError
from jaxsam.scoring import score
from jaxsam.store import load_run

ATTACKS = ("lira_online", "lira_offline", "rmia")
TPR_FPRS = ((0.01, "1%"), (0.001, "0.1%"))  # the extra statistics' operating points
CLAIMS = ("leaks_more", "memorizes_atypical", "out_variance_lower", "linear_theory")
CLAIM_TEXT = {
    "leaks_more": "SAM leaks more at equal or better accuracy (LiRA online AUC)",
    "memorizes_atypical": "SAM memorizes atypical examples more (mean memorization, top 10 %)",
    "out_variance_lower": "SAM's OUT confidence varies less (median OUT variance)",
    "linear_theory": "linear theory: lower OUT variance, higher LR advantage (LiRA offline AUC)",
}


# --------------------------------------------------------------------------- weighted statistics


class WeightedAUC:
    """AUC of pooled [M, N] scores under per-example weights (bootstrap counts), ties as 1/2.

    Sorting happens once; each call with counts ``w`` [N] costs O(M N).
    """

    def __init__(self, scores: np.ndarray, is_member: np.ndarray):
        s = np.asarray(scores, np.float64)
        y = np.asarray(is_member, bool)
        if s.shape != y.shape or s.ndim != 2:
            raise DataError(f"scores {s.shape} and membership {y.shape} must both be [M, N]")
        ok = np.isfinite(s)
        cols = np.broadcast_to(np.arange(s.shape[1]), s.shape)[ok]
        _, self._level = np.unique(s[ok], return_inverse=True)
        self._cols, self._member = cols, y[ok]
        self._levels = int(self._level.max()) + 1 if self._level.size else 0

    def _counts(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = np.asarray(counts, np.float64)[self._cols]
        pos = np.bincount(self._level, w * self._member, self._levels)
        neg = np.bincount(self._level, w * ~self._member, self._levels)
        return pos, neg

    def __call__(self, counts: np.ndarray) -> float:
        pos, neg = self._counts(counts)
        below = np.cumsum(neg) - neg
        den = pos.sum() * neg.sum()
        return float((pos * (below + 0.5 * neg)).sum() / den) if den > 0 else float("nan")

    def tpr_at(self, counts: np.ndarray, fpr: float) -> float:
        """TPR at FPR ``fpr`` under the weights, as the report defines it (the ROC interpolated
        linearly between adjacent score levels; below the FPR resolution the TPR at zero false
        positives): :func:`jaxsam.metrics._tpr_at` on the weighted ROC."""
        pos, neg = self._counts(counts)
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos <= 0 or n_neg <= 0:
            return float("nan")
        roc_fpr = np.concatenate([[0.0], np.cumsum(neg[::-1]) / n_neg])
        roc_tpr = np.concatenate([[0.0], np.cumsum(pos[::-1]) / n_pos])
        return metrics._tpr_at(roc_fpr, roc_tpr, fpr, n_neg)


def weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    """The lower weighted median of ``values`` [N] (NaN skipped) under weights ``counts`` [N]."""
    v = np.asarray(values, np.float64)
    w = np.asarray(counts, np.float64)
    ok = np.isfinite(v) & (w > 0)
    if not ok.any():
        return float("nan")
    order = np.argsort(v[ok], kind="stable")
    cum = np.cumsum(w[ok][order])
    return float(v[ok][order][np.searchsorted(cum, 0.5 * cum[-1])])


def weighted_mean(values: np.ndarray, counts: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean of ``values`` [N] over ``where`` (default all finite) under weights ``counts``."""
    v = np.asarray(values, np.float64)
    w = np.asarray(counts, np.float64) * np.isfinite(v)
    if where is not None:
        w = w * np.asarray(where, bool)
    den = w.sum()
    return float((w * np.nan_to_num(v)).sum() / den) if den > 0 else float("nan")


def top_fraction(values: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Bool [N]: the ``fraction`` of finite ``values`` ranked highest, ties broken at random
    (seeded), so the group has exactly ``round(fraction * #finite)`` members."""
    v = np.asarray(values, np.float64)
    ok = np.nonzero(np.isfinite(v))[0]
    k = int(round(fraction * ok.size))
    tie = np.random.default_rng(seed).random(ok.size)
    order = np.lexsort((tie, -v[ok]))  # by value descending, then the random key
    out = np.zeros(v.shape, bool)
    out[ok[order[:k]]] = True
    return out


# --------------------------------------------------------------------------- one seed's pair


MIN_TRAIN_ACCURACY = 0.5  # a model below this on its own training set has collapsed


def collapsed_models(run, min_train_accuracy: float = MIN_TRAIN_ACCURACY) -> list[int]:
    """Models of ``run`` that failed (NaN) or collapsed: train accuracy below the threshold."""
    acc = (run.read_json("metrics.json") or {}).get("train_accuracy") or []
    low = [i for i, a in enumerate(acc) if a is not None and a < min_train_accuracy]
    return sorted(set(int(i) for i in run.failed_models) | set(low))


def _per_run(run, attacks: Sequence[str], drop: Sequence[int] = ()) -> dict:
    """The per-example arrays of one run that the claims' statistics need, without the models
    ``drop`` (and the run's failed ones)."""
    use = np.ones(run.keep.shape[0], bool)
    use[list(run.failed_models)] = False
    use[list(drop)] = False
    logits, keep = run.logits[use], run.keep[use].astype(bool)
    arrays = mechanism_arrays(logits, run.labels, keep)
    result = score(logits, run.labels, keep, attacks=list(attacks), bootstrap=0)
    out = {
        "keep": keep,
        "auc": {a: WeightedAUC(result.scores[a], keep) for a in attacks},
        "out_correct": (arrays["correct"] & ~keep).sum(0),
        "out_count": (~keep).sum(0),
        "in_correct": (arrays["correct"] & keep).sum(0),
        "in_count": keep.sum(0),
        "memorization": arrays["memorization"],
        "out_variance": arrays["out_variance"],
    }
    test = getattr(run, "test_logits", None)
    if test is not None and np.size(test):
        correct = metrics.correct_predictions(test[use], run.test_labels)
        out["heldout_correct"] = np.asarray(correct, np.float64).mean(0)
    return out


def _statistics(r: Mapping, w: np.ndarray, wt: np.ndarray | None, atypical: np.ndarray) -> dict:
    """Every claim statistic of one run under pool weights ``w`` [N] and held-out ``wt`` [T]."""
    stats = {f"{a}_auc": f(w) for a, f in r["auc"].items()}
    for a, f in r["auc"].items():
        for fpr, name in TPR_FPRS:
            stats[f"{a}_tpr@{name}"] = f.tpr_at(w, fpr)
    stats["train_accuracy"] = float((w * r["in_correct"]).sum() / (w * r["in_count"]).sum())
    stats["out_accuracy"] = float((w * r["out_correct"]).sum() / (w * r["out_count"]).sum())
    if wt is not None and "heldout_correct" in r:
        stats["heldout_accuracy"] = weighted_mean(r["heldout_correct"], wt)
    stats["memorization_atypical"] = weighted_mean(r["memorization"], w, atypical)
    stats["memorization_typical"] = weighted_mean(r["memorization"], w, ~atypical)
    stats["median_out_variance"] = weighted_median(r["out_variance"], w)
    return stats


# --------------------------------------------------------------------------- the study


def paired_bootstrap(
    pairs: Sequence[tuple[Mapping, Mapping]],
    *,
    num_samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Seed-averaged differences (arm - baseline) of every statistic with bootstrap intervals.

    Args:
      pairs: one ``(baseline, arm)`` of :func:`_per_run` dicts per seed, all on the same pool.
      num_samples: bootstrap resamples B.
      seed: seed of the resampling (and of the atypical group's tie-break).

    Returns:
      ``{statistic: {"baseline", "arm", "diff", "low", "high"}}`` (values of the full data
      averaged over seeds; ``low``/``high`` the percentile interval of the difference).
    """
    n = pairs[0][0]["keep"].shape[1]
    t = pairs[0][0].get("heldout_correct")
    t = None if t is None else t.shape[0]
    groups = [
        top_fraction((a["memorization"] + b["memorization"]) / 2, 0.1, seed + i)
        for i, (a, b) in enumerate(pairs)
    ]

    def evaluate(w, wt):
        per = [
            (_statistics(a, w, wt, g), _statistics(b, w, wt, g))
            for (a, b), g in zip(pairs, groups, strict=True)
        ]
        keys = per[0][0].keys()
        return {k: (np.mean([p[0][k] for p in per]), np.mean([p[1][k] for p in per])) for k in keys}

    full = evaluate(np.ones(n), None if t is None else np.ones(t))
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {k: [] for k in full}
    for _ in range(num_samples):
        w = np.bincount(rng.integers(0, n, n), minlength=n)
        wt = None if t is None else np.bincount(rng.integers(0, t, t), minlength=t)
        for k, (a, b) in evaluate(w, wt).items():
            diffs[k].append(b - a)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {
        k: {
            "baseline": float(a),
            "arm": float(b),
            "diff": float(b - a),
            "low": float(np.nanpercentile(diffs[k], lo)),
            "high": float(np.nanpercentile(diffs[k], hi)),
        }
        for k, (a, b) in full.items()
    }


def _sign(s: Mapping) -> int:
    """+1 / -1 when the interval excludes 0 above / below, else 0."""
    return 1 if s["low"] > 0 else -1 if s["high"] < 0 else 0


def decide(stats: Mapping) -> dict[str, dict]:
    """The four claims' verdicts from :func:`paired_bootstrap`'s statistics.

    Returns ``{claim: {"verdict", "statistic", "diff", "low", "high"}}``; verdicts are
    ``holds``, ``reverses``, ``not significant`` and, for claim 1 only, ``holds at lower
    accuracy``.
    """
    acc_key = "heldout_accuracy" if "heldout_accuracy" in stats else "out_accuracy"
    leak = _sign(stats["lira_online_auc"])
    verdict1 = {1: "holds", -1: "reverses", 0: "not significant"}[leak]
    if leak == 1 and _sign(stats[acc_key]) == -1:
        verdict1 = "holds at lower accuracy"
    var = _sign(stats["median_out_variance"])
    lr = _sign(stats["lira_offline_auc"])
    verdict4 = "not significant"
    if var == -1 and lr != 0:
        verdict4 = "holds" if lr == 1 else "reverses"
    verdicts = {
        "leaks_more": (verdict1, "lira_online_auc"),
        "memorizes_atypical": (
            {1: "holds", -1: "reverses", 0: "not significant"}[
                _sign(stats["memorization_atypical"])
            ],
            "memorization_atypical",
        ),
        "out_variance_lower": (
            {-1: "holds", 1: "reverses", 0: "not significant"}[var],
            "median_out_variance",
        ),
        "linear_theory": (verdict4, "lira_offline_auc"),
    }
    return {
        c: {"verdict": v, "statistic": k, **{x: stats[k][x] for x in ("diff", "low", "high")}}
        for c, (v, k) in verdicts.items()
    }


def load_pairs(
    exp_dir: Path,
    baseline: str,
    arm: str,
    seeds: Sequence[int] | None,
    min_train_accuracy: float = MIN_TRAIN_ACCURACY,
    dropped: dict | None = None,
) -> list:
    """One ``(baseline, arm)`` pair of per-run arrays per seed directory of ``exp_dir``.

    A model that failed or collapsed (train accuracy below ``min_train_accuracy``) in either arm
    is left out of both, so the pair stays paired; ``dropped`` (if given) gets
    ``{seed dir name: [model indices]}``.
    """
    dirs = sorted(
        exp_dir.glob("seed*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else -1
    )
    if seeds is not None:
        dirs = [exp_dir / f"seed{s}" for s in seeds]
    pairs = []
    for d in dirs:
        a, b = load_run(d / baseline), load_run(d / arm)
        if a.keep.shape != b.keep.shape or not np.array_equal(a.keep, b.keep):
            raise DataError(
                f"{d}: {baseline} and {arm} have different masks, so they are not paired; "
                "train both arms with the same masks.seed (experiments.run does)"
            )
        drop = sorted(
            set(collapsed_models(a, min_train_accuracy))
            | set(collapsed_models(b, min_train_accuracy))
        )
        if dropped is not None:
            dropped[d.name] = drop
        pairs.append((_per_run(a, ATTACKS, drop), _per_run(b, ATTACKS, drop)))
    if not pairs:
        raise DataError(f"{exp_dir} holds no seed*/ run directories; run experiments.run first")
    return pairs


def render(result: Mapping) -> str:
    """Markdown: one row per claim (verdict, difference and interval), then the statistics."""
    lines = ["| claim | verdict | SAM - SGD [95 % paired bootstrap] |", "| --- | --- | --- |"]
    for c in CLAIMS:
        v = result["claims"][c]
        lines.append(
            f"| {CLAIM_TEXT[c]} | {v['verdict']} | "
            f"{v['diff']:+.4g} [{v['low']:+.4g}, {v['high']:+.4g}] |"
        )
    lines += ["", "| statistic | SGD | SAM | SAM - SGD [95 %] |", "| --- | --- | --- | --- |"]
    for k, s in result["statistics"].items():
        lines.append(
            f"| {k} | {s['baseline']:.4g} | {s['arm']:.4g} | "
            f"{s['diff']:+.4g} [{s['low']:+.4g}, {s['high']:+.4g}] |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m experiments.claims", description=__doc__)
    p.add_argument("exp_dir", type=Path, help="experiment directory (runs/exp/NAME)")
    p.add_argument("--baseline", default="sgd", help="baseline arm directory (default: sgd)")
    p.add_argument("--arm", default="sam", help="compared arm directory (default: sam)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: every seed*/)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    p.add_argument(
        "--min-train-accuracy",
        type=float,
        default=MIN_TRAIN_ACCURACY,
        help="leave out of both arms a model whose train accuracy in either is below this "
        "(a collapsed model; default 0.5)",
    )
    args = p.parse_args(argv)
    dropped: dict = {}
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        pairs = load_pairs(
            args.exp_dir, args.baseline, args.arm, seeds, args.min_train_accuracy, dropped
        )
        stats = paired_bootstrap(pairs, num_samples=args.bootstrap)
    except JaxsamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"seeds": len(pairs), "statistics": stats, "claims": decide(stats)}
    result["bootstrap"] = {"num_samples": args.bootstrap, "unit": "pool examples", "level": 0.95}
    result["dropped_models"] = dropped
    print(f"# {args.exp_dir}: {len(pairs)} seed(s), {args.arm} vs {args.baseline}")
    for name, drop in dropped.items():
        if drop:
            print(
                f"{name}: models {drop} failed or collapsed (train accuracy below "
                f"{args.min_train_accuracy}) in either arm; left out of both"
            )
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
