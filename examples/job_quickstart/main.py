"""The Cloud Run jobs quickstart's task: sleep SLEEP_MS, then fail with probability FAIL_RATE.

Each task of an execution runs this file once per attempt; CLOUD_RUN_TASK_INDEX and
CLOUD_RUN_TASK_ATTEMPT say which. A failed attempt exits non-zero and is retried, up to the
job's --max-retries.
"""

import json
import os
import random
import sys
import time

TASK_INDEX = os.environ.get("CLOUD_RUN_TASK_INDEX", "0")
TASK_ATTEMPT = os.environ.get("CLOUD_RUN_TASK_ATTEMPT", "0")


def main() -> None:
    print(f"Starting Task #{TASK_INDEX}, Attempt #{TASK_ATTEMPT}...")
    time.sleep(float(os.environ.get("SLEEP_MS", "0")) / 1000)
    fail_rate = float(os.environ.get("FAIL_RATE", "0"))
    if not 0 <= fail_rate <= 1:
        print(f"Invalid FAIL_RATE {fail_rate}: it must be between 0 and 1.")
    elif random.random() < fail_rate:
        raise RuntimeError("Task failed.")
    print(f"Completed Task #{TASK_INDEX}.")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:
        # One JSON line: a structured log entry with its severity.
        message = f"Task #{TASK_INDEX}, Attempt #{TASK_ATTEMPT} failed: {error}"
        print(json.dumps({"message": message, "severity": "ERROR"}))
        sys.exit(1)
