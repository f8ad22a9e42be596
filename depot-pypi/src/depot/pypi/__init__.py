"""A Python package index (PEP 503/691) for depot."""
