"""Built-in stage runners, one module per stage type."""
