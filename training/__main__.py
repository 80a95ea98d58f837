"""``python -m spc_fast.training STAGE …`` is ``spc-fast train STAGE …`` (torchrun starts it on every rank)."""

import sys

from spc_fast.training.cli import main

sys.exit(main())
