"""Schemathesis hooks for tests/openapi_fuzz.rs.

A call to a service nobody provides waits its whole `timeout_ms` (default 5000; a provider may
still appear) before its 503, and the schema allows up to 300000 ms: generated timeouts within
the allowed range, and absent or null ones, become CAP_MS so that every request ends well within
the client's timeout and the run stays short. Values out of range or of the wrong type
(negative tests) are left alone, so they are still checked to be refused.

GET /v1/watch is an endless event stream, read up to its first event (see schemathesis.toml).
A resume point that is valid (a sequence number) becomes 0 and the prefix becomes empty, so that
the stream starts at once with the node's first change instead of waiting for a new one.
Invalid ones are left alone, to be refused.
"""

import schemathesis

CAP_MS = 100
MAX_MS = 300_000
U64_MAX = 2**64 - 1


def _sequence(value):
    """The value as a valid sequence number, if it is one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= U64_MAX else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value) if int(value) <= U64_MAX else None
    return None


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.method.upper() == "GET" and case.path == "/v1/watch":
        return _watch_from_the_start(case)
    body = case.body
    if case.path != "/v1/services/{name}/call" or not isinstance(body, dict):
        return
    timeout = body.get("timeout_ms")
    if timeout is None:
        body["timeout_ms"] = CAP_MS
    elif isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        return
    elif CAP_MS < timeout <= MAX_MS and float(timeout).is_integer():
        body["timeout_ms"] = CAP_MS


def _watch_from_the_start(case):
    query = case.query if isinstance(case.query, dict) else {}
    # A dict, or requests' case-insensitive one.
    headers = case.headers if hasattr(case.headers, "keys") else {}
    last = next((k for k in headers if k.lower() == "last-event-id"), None)
    if "from" in query and _sequence(query["from"]) is None:
        return
    if last is not None and _sequence(headers[last]) is None:
        return
    query["from"] = 0
    query["prefix"] = ""
    case.query = query
    if last is not None:
        headers[last] = "0"
