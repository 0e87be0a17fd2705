"""A batch script deployed as a service: it does its work and exits 0 without listening."""

print("exits_at_once: processed 3 rows", flush=True)
