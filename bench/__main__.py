"""``python -m bench`` is the ``bench`` console script (torchrun uses this form)."""
from .cli import main

raise SystemExit(main())
