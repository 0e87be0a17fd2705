"""An HTTP Cloud Run function: deploy it with
`homerun deploy hello-function --source examples/hello_function --function hello_http`."""

import functions_framework


@functions_framework.http
def hello_http(request):
    """Greets `name` from the JSON body or the query string."""
    body = request.get_json(silent=True)
    if body and "name" in body:
        name = body["name"]
    else:
        name = request.args.get("name", "World")
    return f"Hello {name}!\n"
