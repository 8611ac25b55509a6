"""A VAE written the way libraries and tutorials write it -- the code that docs/verify-real-code.md
verifies *without editing it*.

What makes it "library-style": it draws its own noise (``torch.randn_like``), returns only the
batch-mean loss (no trace, no per-example values), keeps its layers in ``nn.Sequential`` with
``nn.Linear`` (``weight`` is refvae's ``W.T``) and splits the encoder output with ``chunk``.
Standard normal prior, Bernoulli decoder on logits, single-sample Monte Carlo KL: the model of
refvae's ``standard-bernoulli`` golden case (SPEC.md).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal

__all__ = ["LibraryVAE"]


class LibraryVAE(nn.Module):
    """x (B, D) in {0, 1} -> the batch mean of the negative ELBO."""

    def __init__(self, x_dim=6, hidden=5, latent_dim=2):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, x_dim))

    def forward(self, x):
        mu, log_var = self.encoder(x).chunk(2, dim=-1)
        std = torch.exp(0.5 * log_var)
        z = mu + std * torch.randn_like(std)                     # the library draws its own noise
        logits = self.decoder(z)
        log_px_z = -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        log_pz = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
        log_qz_x = Normal(mu, std).log_prob(z).sum(-1)
        return -(log_px_z + log_pz - log_qz_x).mean()
