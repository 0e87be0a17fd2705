"""Cloud Run functions as Google's samples write them: deployed with
`homerun deploy NAME --source . --function TARGET`, one target per service."""

import json
import time

import functions_framework


@functions_framework.http
def hello_http(request):
    """HTTP Cloud Function (Google's hello_http sample)."""
    request_json = request.get_json(silent=True)
    request_args = request.args

    if request_json and "name" in request_json:
        name = request_json["name"]
    elif request_args and "name" in request_args:
        name = request_args["name"]
    else:
        name = "World"
    return f"Hello {name}!"


@functions_framework.http
def hello_stream(request):
    """Streams one line every 200 ms: each must reach the client as it is written."""
    count = int(request.args.get("count", "5"))

    def lines():
        for index in range(count):
            yield f"line {index} at {time.monotonic():.3f}\n"
            time.sleep(0.2)

    return lines(), {"Content-Type": "text/plain"}


@functions_framework.cloud_event
def hello_cloud_event(cloud_event):
    """CloudEvent function: prints what it got, so the test reads it in the logs."""
    print(
        json.dumps(
            {
                "message": f"cloud event {cloud_event['id']}",
                "id": cloud_event["id"],
                "type": cloud_event["type"],
                "source": cloud_event["source"],
                "data": cloud_event.data,
            }
        )
    )


def plain_target(request):
    """No decorator: its signature type comes from GOOGLE_FUNCTION_SIGNATURE_TYPE (or http)."""
    return {"path": request.path, "method": request.method}


def hello_background(event, context):
    """A background (legacy `event`) function: GOOGLE_FUNCTION_SIGNATURE_TYPE=event."""
    print(
        json.dumps(
            {
                "message": f"background event {context.event_id}",
                "event_id": context.event_id,
                "event_type": context.event_type,
                "data": event,
            }
        )
    )
