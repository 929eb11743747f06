"""pytc."""
