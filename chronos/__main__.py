"""``python -m chronos``: the same as the ``chronos`` command (see :mod:`chronos.cli`)."""

from chronos.cli import main

raise SystemExit(main())
