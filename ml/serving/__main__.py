"""``python -m ml.serving``: the serving image's entrypoint."""

from ml.serving.server import main

raise SystemExit(main())
