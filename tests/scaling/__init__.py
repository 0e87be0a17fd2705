"""Tests of homerun.scaling: the autoscaler, its policy, units and the supervisor."""
