"""A Cloud Run job's task that signs its report with a key mounted as a file and stages the
report in an in-memory volume, as a job created with

    --set-secrets /secrets/signing-key=api-key:latest
    --add-volume name=scratch,type=in-memory,size-limit=1Mi
    --add-volume-mount volume=scratch,mount-path=/scratch

would. It prints what it found, one line each, for the test to read in the job's logs."""

import hashlib
import os

KEY_FILE = "/secrets/signing-key"
SCRATCH = "/scratch"


def main() -> None:
    with open(KEY_FILE, "rb") as opened:
        key = opened.read()
    print(f"key sha256 {hashlib.sha256(key).hexdigest()}", flush=True)
    try:
        with open(KEY_FILE, "wb") as opened:
            opened.write(b"replaced")
        print("key writable", flush=True)
    except OSError as error:
        print(f"key not writable: {error.strerror}", flush=True)
    report = os.path.join(SCRATCH, f"report-{os.environ.get('CLOUD_RUN_TASK_INDEX', '0')}")
    with open(report, "wb") as opened:
        opened.write(b"x" * 512 * 1024)
    print(f"staged {os.path.getsize(report)} bytes", flush=True)
    try:
        with open(os.path.join(SCRATCH, "too-much"), "wb") as opened:
            opened.write(b"x" * 1024 * 1024)
        print("over the limit written", flush=True)
    except OSError as error:
        print(f"over the limit refused: {error.strerror}", flush=True)


if __name__ == "__main__":
    main()
