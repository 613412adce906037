"""``python -m lm_eval_ruler``: the same as the ``lm-eval-ruler`` command."""

import sys

from .cli import main

sys.exit(main())
