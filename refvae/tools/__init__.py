"""The tools built on the refvae core: the validation report, the golden cases and the
verification harness, the cluster path, the command line, and provenance.

The tools import the core (:mod:`refvae.vae`, :mod:`refvae.priors`, :mod:`refvae.estimators`, ...);
the core never imports a tool.
"""
