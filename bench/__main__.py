import sys

from spc_fast.bench.runner import main

sys.exit(main())
