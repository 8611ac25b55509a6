r"""Results: one quantity (:class:`QuantityResult`), one check (:class:`CheckResult`), one case
(:class:`CaseResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["QuantityResult", "CheckResult", "CaseResult", "PATHS"]

FAILING = ("fail", "shape", "nonfinite", "error")


@dataclass
class QuantityResult:
    """The comparison of one quantity with its golden value."""

    name: str
    position: int                 #: index in the case's data-flow order
    status: str                   #: pass, fail, shape, nonfinite, missing, known
    size: int = 0
    n_failed: int = 0
    max_abs: float | None = None
    max_rel: float | None = None
    ratio: float | None = None    #: largest |a - e| / allowed over the elements
    index: list | None = None     #: the element with the largest ratio
    expected: float | None = None
    actual: float | None = None
    allowed: float | None = None
    message: str = ""
    reason: str | None = None     #: a known deviation's reason
    reproduction: str | None = None
    diagnosis: str | None = None  #: the slip the value equals (refvae.tools.verify.diagnoses)

    @property
    def failed(self):
        return self.status in FAILING


#: the independent paths of a case's quantities (a bug on one path shows first on it): name -> path
PATHS = ("encoder/decoder", "prior density", "ELBO", "gradients", "prior sampler")

#: the paths whose quantities each path reads (a divergence there may explain one here)
PATH_INPUTS = {"encoder/decoder": (), "prior density": ("encoder/decoder",),
               "ELBO": ("encoder/decoder", "prior density"),
               "gradients": ("encoder/decoder", "prior density", "ELBO"), "prior sampler": ()}


def _path_of(name):
    """The path of a quantity (:data:`PATHS`): the prior's density (``prior.*``, ``log_pz``), its
    sampler (``prior_sample.*``), the ELBO's terms (``kl``, ``neg_elbo``, ``loss``), the gradients
    (``grad.*``), else the encoder/decoder trace."""
    if name.startswith("prior_sample."):
        return "prior sampler"
    if name.startswith("prior.") or name == "log_pz":
        return "prior density"
    if name in ("kl", "neg_elbo", "loss"):
        return "ELBO"
    if name.startswith("grad."):
        return "gradients"
    return "encoder/decoder"


@dataclass
class CheckResult:
    """One check that needs no golden value (or ``golden`` summarised)."""

    name: str                     #: gradient, normalisation, sampler, mixture, nll, prior_gradient
    status: str                   #: pass, fail, skip, known, error
    summary: str
    value: float | None = None
    allowed: float | None = None
    details: dict = field(default_factory=dict)
    reason: str | None = None
    reproduction: str | None = None
    diagnosis: str | None = None  #: the slip the check recognised (also in the summary)

    @property
    def failed(self):
        return self.status in FAILING


@dataclass
class CaseResult:
    case: str
    path: str
    quantities: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    first_divergence: str | None = None
    error: str | None = None
    ignored: list = field(default_factory=list)  #: reported names that the case does not have
    seconds: float = 0.0
    mode: str = "model"           #: "model" (the adapter has run) or "prior-only"
    not_applicable: str | None = None  #: why the adapter declared it cannot run the case
    divergences: dict = field(default_factory=dict)  #: path -> its first failing quantity

    @property
    def passed(self):
        """True when nothing failed (a case the adapter declared not applicable is not a pass:
        :attr:`VerifyReport.passed` leaves it out, and the report counts it separately)."""
        return (self.not_applicable is None and self.error is None
                and not any(q.failed for q in self.quantities)
                and not any(c.failed for c in self.checks))

    def quantity(self, name):
        for q in self.quantities:
            if q.name == name:
                return q
        raise KeyError(name)

    def check(self, name):
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def failed_quantities(self):
        return [q.name for q in self.quantities if q.failed]

    @property
    def failed_checks(self):
        return [c.name for c in self.checks if c.failed]

