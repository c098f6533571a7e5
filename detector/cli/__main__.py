"""``python -m detector.cli``: the same entry point as the ``csf`` console script."""

from detector.cli import main

raise SystemExit(main())
