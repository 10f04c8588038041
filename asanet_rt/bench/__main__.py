"""``python -m asanet_rt.bench --worker JOB OUT``: the per-model subprocess of ``asanet-rt bench``."""
import sys

from .run import main

sys.exit(main())
