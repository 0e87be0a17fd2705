import time

# Looks alive but never binds $PORT, so the startup probe can never succeed.
print("never_listens: started, not listening on purpose", flush=True)
while True:
    time.sleep(3600)
