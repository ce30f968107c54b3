"""``python -m lycb_jax``: the ``lycb-jax`` command line."""

import sys

from lycb_jax.cli import main

sys.exit(main())
