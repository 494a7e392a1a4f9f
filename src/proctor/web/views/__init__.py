"""The console's pages, one module per concept, each offering its ``routes()``."""
