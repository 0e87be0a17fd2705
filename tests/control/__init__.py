"""Tests of homerun.control: a whole control plane over a fake runtime."""
