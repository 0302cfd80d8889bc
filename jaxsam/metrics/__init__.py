"""The statistics layer: accuracy of the shadow models, and ROC metrics of membership scores.

One job per module, every name re-exported here (``from jaxsam import metrics;
metrics.roc_metrics(...)`` is the way in):

* :mod:`jaxsam.metrics.accuracy`: every accuracy jaxsam reports (``metrics.json``,
  ``report.json``, ``analysis.json``) is built from :func:`correct_predictions` (arg-max of the
  identity view, query 0) and averaged by :func:`accuracy_per_model` or :func:`pooled_accuracy`.
* :mod:`jaxsam.metrics.roc`: ROC metrics (AUC, balanced accuracy, advantage, TPR at low FPR),
  their bootstrap intervals, and the operating point every TPR at a fixed FPR reads, pooled or
  per subgroup (:func:`operating_point`).
* :mod:`jaxsam.metrics.support`: a report entry's operating points and which of its TPR rows
  the data supports, with the exact interval of an unsupported one (:func:`row_support`).

Conventions: ``scores`` higher = member; ``is_member`` True for members. Scores of all targets
are pooled (flattened) unless a per-target helper is used. Ties are handled exactly: all
examples sharing a score value move across the threshold together, so the ROC has one point
per distinct score and the AUC equals the Mann-Whitney statistic with ties counted 1/2.

``tpr_at_fpr[f]`` is the ROC interpolated linearly at FPR ``f`` between its two adjacent points:
the TPR of the randomized threshold that flags every score above a level and each score *at*
the next level with the probability that makes the FPR exactly ``f`` (:func:`operating_point`).
Tied scores (RMIA's counts, say) cross a threshold together, so a deterministic threshold may
have to stop well short of ``f``; the randomized one does not, and without ties the two agree.
With ``n`` non-members, an FPR of ``f`` allows ``f * n`` false positives; when that is below 1
the value is the TPR at zero false positives (no interpolation) and says nothing specific about
``f`` (``resolvable`` False).
"""

from jaxsam.metrics.accuracy import (
    ACCURACY_QUERY,
    accuracy_per_model,
    correct_predictions,
    pooled_accuracy,
)
from jaxsam.metrics.roc import (
    DEFAULT_FPRS,
    HEADLINE_FPRS,
    _auc,  # noqa: F401 (private, read by plots)
    _tpr_at,  # noqa: F401 (private, read by experiments/claims.py)
    bootstrap,
    flag_weights,
    fpr_key,
    operating_point,
    per_target_metrics,
    roc_curve,
    roc_metrics,
    threshold_at_fpr,
)
from jaxsam.metrics.support import (
    EXACT_INTERVAL_CONDITION,
    EXACT_INTERVAL_METHOD,
    OPERATING_FPRS,
    ZERO_FP_WORDS,
    exact_interval,
    mark_support,
    operating_points,
    row_support,
    tpr_key,
)

__all__ = [
    "ACCURACY_QUERY",
    "DEFAULT_FPRS",
    "EXACT_INTERVAL_CONDITION",
    "EXACT_INTERVAL_METHOD",
    "HEADLINE_FPRS",
    "OPERATING_FPRS",
    "ZERO_FP_WORDS",
    "accuracy_per_model",
    "bootstrap",
    "correct_predictions",
    "exact_interval",
    "flag_weights",
    "fpr_key",
    "mark_support",
    "operating_point",
    "operating_points",
    "per_target_metrics",
    "pooled_accuracy",
    "roc_curve",
    "roc_metrics",
    "row_support",
    "threshold_at_fpr",
    "tpr_key",
]
