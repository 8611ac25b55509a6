"""``python -m refvae.tools.distributed``: a library, not a command."""

import sys

sys.exit("refvae.tools.distributed is a library; the command is `refvae stats`")
