"""A job's task for the end-to-end tests, shaped like Cloud Run's jobs quickstart: it reads its
index and attempt, sleeps SLEEP_MS, and fails as FAIL_MODE says (deterministic, unlike the
quickstart's FAIL_RATE): `odd-first` fails the first attempt of odd indexes, `always` every
attempt. With WAIT_INDEX, that task waits until the file WAIT_FOR exists. With RECORD_DIR,
each attempt writes INDEX-ATTEMPT.json there: its start and end times, pid and environment."""

import json
import os
import sys
import time
from pathlib import Path

index = int(os.environ["CLOUD_RUN_TASK_INDEX"])
attempt = int(os.environ["CLOUD_RUN_TASK_ATTEMPT"])
record_dir = os.environ.get("RECORD_DIR")
started = time.time()
print(f"Starting Task #{index}, Attempt #{attempt}...", flush=True)


def record(**fields: object) -> None:
    if not record_dir:
        return
    names = ("CLOUD_RUN_JOB", "CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_COUNT", "PORT", "K_SERVICE")
    report = {"index": index, "attempt": attempt, "pid": os.getpid(), "start": started}
    report["env"] = {name: os.environ.get(name) for name in names}
    report.update(fields)
    path = Path(record_dir) / f"{index}-{attempt}.json"
    path.write_text(json.dumps(report))


record()  # the start, written again with its end below
if os.environ.get("WAIT_INDEX") == str(index):
    while not Path(os.environ["WAIT_FOR"]).exists():
        time.sleep(0.05)
time.sleep(float(os.environ.get("SLEEP_MS", "0")) / 1000)
mode = os.environ.get("FAIL_MODE", "")
failing = mode == "always" or (mode == "odd-first" and index % 2 == 1 and attempt == 0)
record(end=time.time(), failed=failing)
if failing:
    message = f"Task #{index}, Attempt #{attempt} failed."
    print(json.dumps({"message": message, "severity": "ERROR"}), flush=True)
    sys.exit(1)
print(f"Completed Task #{index}.", flush=True)
