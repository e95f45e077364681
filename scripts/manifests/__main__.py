"""`python -m scripts.manifests ...`: see scripts/manifests/__init__.py."""

import sys

from scripts.manifests.cli import main

sys.exit(main())
