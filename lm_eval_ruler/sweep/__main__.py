"""``python -m lm_eval_ruler.sweep ...``: the same as ``lm-eval-ruler sweep ...``."""

import sys

from .cli import main

sys.exit(main())
