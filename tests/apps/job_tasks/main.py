"""A job's task for the end-to-end tests, shaped like Cloud Run's jobs quickstart: it reads its
index and attempt, sleeps SLEEP_MS, and fails as FAIL_MODE says (deterministic, unlike the
quickstart's FAIL_RATE): `odd-first` fails the first attempt of odd indexes, `always` every
attempt. With WAIT_INDEX, that task's first attempt waits (ten minutes at most) until it is
stopped. Its first and last lines are JSON, each with a `record` of the attempt (start and end
times, pid, interpreter and environment) that the tests read from the job's log: in a sandbox,
a task sees none of the test's folders."""

import json
import os
import sys
import time

index = int(os.environ["CLOUD_RUN_TASK_INDEX"])
attempt = int(os.environ["CLOUD_RUN_TASK_ATTEMPT"])
started = time.time()


def say(message: str, severity: str = "DEFAULT", **fields: object) -> None:
    names = ("CLOUD_RUN_JOB", "CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_COUNT", "PORT", "K_SERVICE")
    record = {"index": index, "attempt": attempt, "pid": os.getpid(), "start": started}
    record.update(python=sys.executable, env={name: os.environ.get(name) for name in names})
    record.update(fields)
    print(json.dumps({"message": message, "severity": severity, "record": record}), flush=True)


say(f"Starting Task #{index}, Attempt #{attempt}...")  # the start; the end comes below
if os.environ.get("WAIT_INDEX") == str(index) and attempt == 0:
    time.sleep(600)
time.sleep(float(os.environ.get("SLEEP_MS", "0")) / 1000)
mode = os.environ.get("FAIL_MODE", "")
failing = mode == "always" or (mode == "odd-first" and index % 2 == 1 and attempt == 0)
if failing:
    say(f"Task #{index}, Attempt #{attempt} failed.", "ERROR", end=time.time(), failed=True)
    sys.exit(1)
say(f"Completed Task #{index}.", end=time.time(), failed=False)
