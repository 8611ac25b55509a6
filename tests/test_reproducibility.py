"""What refvae promises about reproducibility (README, *Reproducibility*), and no more.

- **One machine, any thread count: bit-identical.** A loss and every gradient of the VAE (matrix
  products by the machine's BLAS, refvae's own Numba kernels) are the same bits with 1 and 2
  threads and on repeated calls. The mixture kernel's own tests (tests/test_mixture.py) check the
  same for the kernel and its VJP.
- **Across machines and BLAS builds: within a stated rounding bound.** A matrix product's last bits
  depend on the BLAS kernel (OpenBLAS picks kernels by CPU, and some machines set
  ``OPENBLAS_CORETYPE``), so committed values are compared within their bound (the golden cases:
  ``golden_regeneration``, tests/test_golden.py and tests/test_verify.py), never exactly.
- **Nothing in the tests or CI changes the machine's BLAS settings** (``OPENBLAS_*``): a test that
  passed only under pinned kernels would promise more than refvae keeps.
"""

from pathlib import Path

import numpy as np
import pytest

from refvae import golden
from refvae.provenance import limit_threads
from refvae.vae import VAE

ROOT = Path(__file__).resolve().parents[1]


def _bits(a):
    a = np.ascontiguousarray(a, np.float64)
    return a.shape, a.view(np.uint64).tobytes()


@pytest.mark.parametrize("prior", ["standard", "mog", "vamp", "gtm_vamp", "flow"])
def test_loss_and_gradients_bit_identical_for_1_and_2_threads(prior):
    """A batch large enough that OpenBLAS and Numba really use two threads (200 x 256 products)."""
    rng = np.random.default_rng(3)
    model = VAE(64, 16, (256, 256), "leaky_relu", "categorical", 17, prior, rng=rng)
    x = rng.integers(0, 17, size=(200, 64)).astype(np.float64)
    eps = rng.standard_normal((200, 16))
    runs = []
    for n in (1, 2, 1):
        with limit_threads(n):
            per_example = model.neg_elbo(x, eps).per_example
            loss, g = model.neg_elbo_and_grad(x, eps)
        runs.append((_bits(per_example), _bits(loss), {k: _bits(v) for k, v in g.items()}))
    assert runs[0] == runs[1] == runs[2]


def test_ci_and_tests_leave_the_machines_blas_settings_alone():
    """No OPENBLAS_* assignment in .ci/run, setup.cfg or any test module (this one only names it)."""
    offenders = []
    for path in [ROOT / ".ci" / "run", ROOT / "setup.cfg", *sorted((ROOT / "tests").glob("*.py"))]:
        if path.name == Path(__file__).name:
            continue
        text = path.read_text(encoding="utf-8")
        if "OPENBLAS_" in text and ("environ" in text or "export" in text or "=" in text.split(
                "OPENBLAS_", 1)[1].split("\n", 1)[0]):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_committed_golden_values_reproduce_within_the_regeneration_bound():
    """Every committed golden value, recomputed here, within c u (S_q + |e|), c = golden_regeneration
    (32): the cross-machine promise. The largest fraction of the bound seen over OpenBLAS's Haswell,
    Sandybridge, Nehalem and Prescott kernels was 0.28 of the harness bound (0.55 of this one); a
    changed formula exceeds it by many orders of magnitude (tests/test_golden.py plants one)."""
    c = golden.tolerance("golden_regeneration").rtol
    worst = 0.0
    for name in golden.list_cases():
        case = golden.load_case(name)
        out = golden.reference_outputs(case.model(), case.x, case.eps, case.draws)
        for k, want in case.values.items():
            ratio = np.max(np.abs(np.asarray(out[k]) - want)
                           / golden.allowed_error(want, case.scales[k], "float64", c=c))
            worst = max(worst, float(ratio))
    assert worst <= 1.0, worst
