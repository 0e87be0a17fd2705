"""Tests of homerun.build: the Dockerfile subset, entrypoints, dependencies, real builds."""
