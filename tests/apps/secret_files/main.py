"""An API that reads its key from a secret mounted as a file and keeps rendered pages in an
in-memory volume, as a Cloud Run service deployed with

    --set-secrets /secrets/api-key=api-key:latest
    --add-volume name=cache,type=in-memory,size-limit=2Mi
    --add-volume-mount volume=cache,mount-path=/cache

would. It also answers what a curious app may try: writing over its secret, reading files
that are not its own."""

from __future__ import annotations

import os

from flask import Flask, jsonify, request

app = Flask(__name__)

KEY_FILE = os.environ.get("API_KEY_FILE", "/secrets/api-key")
CACHE = os.environ.get("CACHE_DIR", "/cache")
# Which instance answers (pids repeat: each instance has a PID namespace of its own).
INSTANCE = os.urandom(6).hex()


def _attempt(action, *args):
    try:
        action(*args)
    except OSError as error:
        return {"ok": False, "error": error.strerror}
    return {"ok": True}


def _overwrite(path):
    with open(path, "w") as opened:
        opened.write("replaced")


@app.get("/")
def key():
    """The key as the app reads it now (a real app would send it on to its API)."""
    try:
        with open(KEY_FILE) as opened:
            value = opened.read()
    except OSError as error:
        return jsonify(error=error.strerror, path=KEY_FILE), 500
    return jsonify(
        api_key=value,
        revision=os.environ.get("K_REVISION"),
        pid=os.getpid(),
        instance=INSTANCE,
        folder=sorted(os.listdir(os.path.dirname(KEY_FILE))),
    )


@app.post("/tamper")
def tamper():
    folder = os.path.dirname(KEY_FILE)
    return jsonify(
        overwrite=_attempt(_overwrite, KEY_FILE),
        create=_attempt(_overwrite, os.path.join(folder, "planted")),
        remove=_attempt(os.remove, KEY_FILE),
        chmod=_attempt(os.chmod, KEY_FILE, 0o666),
    )


@app.post("/cache/<name>")
def store(name):
    """Write `kib` KiB to the cache; a full volume fails the write, not the instance."""
    kib = int(request.args.get("kib", "1"))
    path = os.path.join(CACHE, name)
    result = _attempt(_fill, path, kib)
    if not result["ok"] and os.path.exists(path):
        os.remove(path)
    return jsonify(result)


def _fill(path, kib):
    with open(path, "wb") as opened:
        for _ in range(kib):
            opened.write(b"\0" * 1024)


@app.get("/cache")
def listing():
    try:
        names = sorted(os.listdir(CACHE))
    except OSError as error:
        return jsonify(error=error.strerror)
    return jsonify(files={name: os.path.getsize(os.path.join(CACHE, name)) for name in names})


@app.get("/read")
def read():
    path = request.args["path"]
    try:
        with open(path, "rb") as opened:
            return jsonify(ok=True, data=opened.read(4096).decode(errors="replace"))
    except OSError as error:
        return jsonify(ok=False, error=error.strerror)
