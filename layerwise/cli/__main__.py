"""``python -m layerwise.cli`` runs the same command as ``layerwise``."""

from layerwise.cli.main import main

raise SystemExit(main())
