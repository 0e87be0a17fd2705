from flask import Flask

print("crash_on_boot: loading settings", flush=True)
raise RuntimeError("crash_on_boot: DATABASE_URL is not set")

app = Flask(__name__)
