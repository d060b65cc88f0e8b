"""``python -m benchmarks [--quick] [--only NAME]``: see :mod:`benchmarks.run`."""

from benchmarks.run import main

raise SystemExit(main())
