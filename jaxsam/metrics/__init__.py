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

Conventions (``scores`` higher = member, pooled over targets; ties; what ``tpr_at_fpr[f]`` is
and when it is ``resolvable``) are set out in :mod:`jaxsam.metrics.roc`.
"""

from jaxsam.metrics.accuracy import (
    ACCURACY_QUERY,
    UNTRAINED_MARGIN,
    accuracy_per_model,
    correct_predictions,
    pooled_accuracy,
    untrained_models,
)
from jaxsam.metrics.roc import (
    DEFAULT_FPRS,
    HEADLINE_FPRS,
    MAX_BOOTSTRAP,
    _auc,  # noqa: F401 (private, read by plots)
    _tpr_at,  # noqa: F401 (private, read by experiments/claims.py)
    bootstrap,
    check_bootstrap,
    check_fprs,
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
    "UNTRAINED_MARGIN",
    "DEFAULT_FPRS",
    "EXACT_INTERVAL_CONDITION",
    "EXACT_INTERVAL_METHOD",
    "HEADLINE_FPRS",
    "MAX_BOOTSTRAP",
    "OPERATING_FPRS",
    "ZERO_FP_WORDS",
    "accuracy_per_model",
    "bootstrap",
    "check_bootstrap",
    "check_fprs",
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
    "untrained_models",
]
