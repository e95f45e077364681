"""``python -m scripts.workflows [--check]``: regenerate (or verify) the generated manifests."""

from scripts.workflows.generate import main

raise SystemExit(main())
