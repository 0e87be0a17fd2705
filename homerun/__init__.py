"""homerun: a self-hosted Cloud Run for Python web apps."""

__version__ = "0.1.0"
