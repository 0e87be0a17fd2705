"""The admin API the CLI talks to (and, later, the dashboard)."""
