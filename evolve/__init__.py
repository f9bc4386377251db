"""The service: run configuration, the search loop, strategies, the store, CLI and export."""
