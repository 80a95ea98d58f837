"""``python -m spc_fast``: the same command line as ``spc-fast``."""

from spc_fast.cli import main

raise SystemExit(main())
