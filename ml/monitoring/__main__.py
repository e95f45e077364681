"""``python -m ml.monitoring``: the drift CronJob's entrypoint (see ml/monitoring/cli.py)."""

from ml.monitoring.cli import main

raise SystemExit(main())
