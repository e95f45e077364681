"""``python -m ml.workflows [--check]``: regenerate (or verify) the generated manifests."""

from ml.workflows.generate import main

raise SystemExit(main())
