"""Every LiRA choice in one frozen, hashable value (a static argument of the jitted scorer).

``lira``/``lira_from_signal`` keep their keyword API; :meth:`LiraOptions.from_keywords` turns
the keywords into one :class:`LiraOptions`, resolving ``compat="reference"`` (the published
code's choices) and rejecting keywords that contradict it.
"""

from __future__ import annotations

import dataclasses

from jaxsam.attacks._checks import check_choice
from jaxsam.attacks._reference import check_equal_groups
from jaxsam.errors import ConfigError

# What ``compat="reference"`` selects: tensorflow/privacy research/mi_lira_2021/plot.py.
REFERENCE = {
    "mean": "median",
    "offline_test": "density",
    "variance_mode": "reference",
    "equal_groups": True,
}
# The jaxsam defaults of the keywords that ``compat`` may set.
DEFAULTS = {
    "mean": "mean",
    "offline_test": "one_sided",
    "variance_mode": "pooled",
    "equal_groups": "auto",
}


@dataclasses.dataclass(frozen=True)
class LiraOptions:
    """Resolved LiRA options (see :func:`jaxsam.attacks.lira` for each keyword).

    Attributes:
      online: IN and OUT shadows (likelihood ratio); False: OUT shadows only.
      fix_variance: one variance per group and query ("global") instead of per example.
      mean: ``"mean"`` or ``"median"``: the Gaussian's location.
      offline_test: ``"one_sided"`` or ``"density"``.
      variance_mode: ``"pooled"`` (within-example spread) or ``"reference"`` (spread around the
        grand mean, the IN spread reused for OUT online).
      equal_groups: the reference-group rule (:mod:`jaxsam.attacks._reference`): ``"auto"``
        (decide from the masks), True (cut every target's IN and OUT groups to sizes that do
        not depend on its membership) or False (all leave-one-out shadows, with fallbacks).
      variance_groups: where a global variance comes from: ``"all"`` (all leave-one-out
        shadows; the default) or ``"cut"`` (the cut groups, as the published code does).
      min_shadows_variance: per-example variance needs this many shadows per group (>= 2).
      var_floor: lower bound on every variance.
      precision: ``"float64"`` or ``"float32"`` accumulation.
      chunk_size: targets scored per jitted call (None: all targets in tiles of about 2M
        values; other than with a global pooled variance and the mean: about 16M values
        per call).
      compat: None (jaxsam's choices) or ``"reference"`` (the published code's), for reports.
    """

    online: bool = True
    fix_variance: bool = True
    mean: str = "mean"
    offline_test: str = "one_sided"
    variance_mode: str = "pooled"
    equal_groups: bool | str = "auto"
    variance_groups: str = "all"
    min_shadows_variance: int = 2
    var_floor: float = 1e-12
    precision: str = "float64"
    chunk_size: int | None = None
    compat: str | None = None

    def __post_init__(self) -> None:
        check_choice("mean", self.mean, ("mean", "median"))
        check_choice("offline_test", self.offline_test, ("one_sided", "density"))
        check_choice("variance_mode", self.variance_mode, ("pooled", "reference"))
        check_choice("variance_groups", self.variance_groups, ("all", "cut"))
        check_choice("precision", self.precision, ("float64", "float32"))
        check_equal_groups(self.equal_groups)
        for name in ("online", "fix_variance"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be True or False")
        if not isinstance(self.min_shadows_variance, int) or self.min_shadows_variance < 2:
            raise ConfigError(
                f"min_shadows_variance={self.min_shadows_variance!r}: a spread needs at least 2 "
                "shadows; pass an integer >= 2"
            )
        if not self.var_floor > 0:
            raise ConfigError(f"var_floor={self.var_floor!r} must be > 0 (e.g. 1e-12)")
        if self.chunk_size is not None and not (
            isinstance(self.chunk_size, int) and self.chunk_size >= 1
        ):
            raise ConfigError(f"chunk_size={self.chunk_size!r} must be None or an integer >= 1")

    @property
    def groups(self) -> tuple[str, ...]:
        """The shadow groups this attack reads: ``("in", "out")`` online, ``("out",)`` offline."""
        return ("in", "out") if self.online else ("out",)

    @classmethod
    def from_keywords(
        cls,
        *,
        compat: str | None = None,
        mean: str | None = None,
        offline_test: str | None = None,
        variance_mode: str | None = None,
        equal_groups: bool | str | None = None,
        **rest,
    ) -> LiraOptions:
        """Options from :func:`lira`'s keywords; None means "the default, or what compat sets".

        With ``compat``, ``equal_groups="auto"`` also means "what compat sets" (True).

        Raises:
          ConfigError: an unknown ``compat``, or a keyword that contradicts it.
        """
        given = {
            "mean": mean,
            "offline_test": offline_test,
            "variance_mode": variance_mode,
            "equal_groups": equal_groups,
        }
        if compat is None:
            chosen = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
            return cls(**chosen, **rest)
        check_choice("compat", compat, ("reference",))
        if equal_groups == "auto":
            given["equal_groups"] = None
        clash = {k: v for k, v in given.items() if v is not None and v != REFERENCE[k]}
        if clash:
            named = ", ".join(f"{k}={v!r}" for k, v in clash.items())
            raise ConfigError(
                f"compat={compat!r} sets {', '.join(f'{k}={REFERENCE[k]!r}' for k in clash)} "
                f"itself, but {named} was passed; drop {named} or drop compat"
            )
        return cls(**REFERENCE, variance_groups="cut", compat=compat, **rest)
