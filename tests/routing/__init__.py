"""Tests of homerun.routing: the routing table, the throttler and the proxy."""
