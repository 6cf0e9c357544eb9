"""The ``layerwise`` command line; the entry point is ``layerwise.cli.main:main``.

Nothing is imported here, so that ``python -m layerwise.cli.main`` runs the module fresh.
"""
