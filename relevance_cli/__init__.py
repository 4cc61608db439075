"""The ``relevance`` command: the project's one entry point for humans (generate, bench, serve, rollback, ...)."""
