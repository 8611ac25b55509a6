"""Numba kernels, each beside its plain-NumPy reference twin in the same module.

- :mod:`~refvae.kernels.mixture` -- the streaming log-sum-exp of a Gaussian mixture (the
  aggregated posterior and the mixture priors) and its VJP;
- :mod:`~refvae.kernels.fastexp` -- the vectorised exp used inside the mixture kernel;
- :mod:`~refvae.kernels.rowkernels` -- fused per-row kernels of the categorical likelihood.

The twins define what the kernels compute; tests compare the two on adversarial inputs.
"""
