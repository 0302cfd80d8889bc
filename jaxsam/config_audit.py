"""The ``audit`` section of the config (canaries for a DP audit): a plain dataclass.

Kept apart from :mod:`jaxsam.config` (which holds it as ``Config.audit``) so that the audit's
keys and checks live in one place; like the rest of the config it imports no jax.
"""

from __future__ import annotations

import dataclasses

from jaxsam.errors import ConfigError

AUDIT_KINDS = ("mislabel", "noise", "duplicate")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Canaries for a DP audit (``jaxsam audit RUN``; docs/audit.md). Off by default.

    Attributes:
      canaries: number of canary examples (0: no audit, and the run is exactly the run without
        this section). Each target model includes each canary independently with probability
        1/2; the other models (references) never train on a canary; every other example keeps
        the study's masks.
      kind: ``mislabel`` (a pool example drawn with ``seed`` whose label is replaced by a wrong
        one), ``noise`` (an added example of random inputs with a random label) or
        ``duplicate`` (an added second copy of a pool example drawn with ``seed``).
      targets: how many of the ``masks.models`` models are targets (``None``: half of them);
        the others are references.
      seed: seed of the canaries, the targets and the targets' canary memberships.
    """

    canaries: int = 0
    kind: str = "mislabel"
    targets: int | None = None
    seed: int = 0

    @property
    def enabled(self) -> bool:
        """Whether the run has canaries."""
        return self.canaries > 0

    def check(self, models: int) -> None:
        """Raises :class:`ConfigError` for a bad value (the pool size is checked where the
        pool is built); ``models`` is ``masks.models``."""
        if not _is_int(self.canaries) or not 0 <= self.canaries < 2**31:
            raise ConfigError(
                f"audit.canaries = {self.canaries!r} is out of range; it must be a non-negative "
                "integer (0: no audit), e.g. 100"
            )
        if self.kind not in AUDIT_KINDS:
            raise ConfigError(
                f"audit.kind = {self.kind!r} is not allowed; use one of {list(AUDIT_KINDS)}"
            )
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"audit.seed = {self.seed!r} must be an integer in [0, 2**32)")
        if self.targets is not None and not (_is_int(self.targets) and 1 <= self.targets < models):
            raise ConfigError(
                f"audit.targets = {self.targets!r} is out of range; it must lie between 1 and "
                f"masks.models - 1 = {models - 1} (the other models are references), or be null "
                "(half of the models)"
            )
