"""A worker pool's instance for the end-to-end tests: it listens on nothing and works until it
is stopped, writing RECORD_DIR/PID.json (its environment) when it starts and a line a second."""

import json
import os
import signal
import sys
import time
from pathlib import Path

names = ("CLOUD_RUN_WORKER_POOL", "CLOUD_RUN_REVISION", "PORT", "K_SERVICE", "QUEUE")
report = {"pid": os.getpid(), "env": {name: os.environ.get(name) for name in names}}
Path(os.environ["RECORD_DIR"], f"{os.getpid()}.json").write_text(json.dumps(report))
print(f"worker {os.getpid()} pulling from {os.environ.get('QUEUE')}", flush=True)


def stop(signum: int, frame: object) -> None:
    print(f"worker {os.getpid()} stopping", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(1)
