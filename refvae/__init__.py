"""refvae: a numerically rigorous reference VAE and the priors of Tomczak, *Deep Generative
Modeling*, section 4.4.1, with hand-written forward and backward passes.

The mathematical contract is ``docs/SPEC.md``; every sign and convention used here is the one
written there.
"""

__version__ = "0.1.0"
