"""``python -m torch_stgen`` is the ``torch-stgen`` command line."""
import sys

from .cli import main

sys.exit(main())
