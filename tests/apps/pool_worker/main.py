"""A worker pool's instance for the end-to-end tests: it listens on nothing and works until it
is stopped, saying so when it starts and stops (the tests read its environment in /proc)."""

import os
import signal
import sys
import time

print(f"worker {os.getpid()} pulling from {os.environ.get('QUEUE')}", flush=True)


def stop(signum: int, frame: object) -> None:
    print(f"worker {os.getpid()} stopping", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(1)
