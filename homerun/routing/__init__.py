"""Request routing: pure selection of a revision, the per-revision throttler, the proxy."""
