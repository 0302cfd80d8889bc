"""DP auditing with canaries: lower bounds on epsilon from a reference-only attack.

- :mod:`jaxsam.audit.bounds`: the bounds of one test (one-run, f-DP, Clopper-Pearson);
- :mod:`jaxsam.audit.strategies`: threshold strategies with their corrections, and ceilings.

docs/audit.md explains the design: targets, references, canaries, and why the study's exact
k-of-M masks cannot be audited as they stand.
"""

from jaxsam.audit.bounds import (
    clopper_pearson_epsilon,
    fdp_epsilon,
    one_run_epsilon,
    one_run_p_value,
)
from jaxsam.audit.strategies import METHODS, STRATEGIES, audit_bound

__all__ = [
    "METHODS",
    "STRATEGIES",
    "audit_bound",
    "clopper_pearson_epsilon",
    "fdp_epsilon",
    "one_run_epsilon",
    "one_run_p_value",
]
