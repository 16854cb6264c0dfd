"""The algorithms. Imports only torch, models and data: never widgets (a test proves it)."""
