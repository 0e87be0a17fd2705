"""Scaling: observing concurrency, deciding instance counts, and applying decisions."""
