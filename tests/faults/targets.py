"""A target that misbehaves over real sockets: the reference connector service (connector_service/reference.py)
on loopback, behind a middleware that refuses or hangs the calls a test picks, and notes every call it gets.

What reaches the service is what Resync sent over HTTP: its refusals are real 429 and 503 answers with a
Retry-After header, and a hung call is a socket that accepted the request and never answers, so only the client's
own timeout ends it.
"""

import dataclasses
import io
import json
import threading
import time

from connector_service.reference import ReferenceServer, ReferenceService

SECRET = "whsec_" + "cmVzeW5jLWZhdWx0LWluamVjdGlvbi1zZWNyZXQ="  # base64 of 30 bytes


@dataclasses.dataclass
class Call:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    keys: tuple  # the records it is about: the emails written or looked up, the ids fetched
    status: int = 200  # what the middleware answered itself (0: hung); 200: passed on to the service
    retry_after: int = 0


def call_keys(path, body):
    if not isinstance(body, dict):
        return ()
    if path == "/v1/data":
        return tuple(str((entry.get("data") or {}).get("email")) for entry in body.get("records") or ()
                     if isinstance(entry, dict))
    if path == "/v1/data/find":
        return tuple(str(value) for value in body.get("values") or ())
    if path == "/v1/data/fetch":
        return tuple(str(value) for value in body.get("ids") or ())
    return ()


class Misbehaving:
    """WSGI: `decide(call)` says what to do with each call: None (the service answers), ("refuse", status,
    retry_after) or ("hang",). A hung call is held until `release` is set (the test's end), then dropped."""

    def __init__(self, service, decide):
        self.service = service
        self.decide = decide
        self.calls: list[Call] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    @property
    def secrets(self):
        return self.service.secrets

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = environ.get("PATH_INFO") or "/"
        with self.lock:
            call = Call(time.monotonic(), environ["REQUEST_METHOD"].upper(), path, call_keys(path, body))
            self.calls.append(call)
            verdict = self.decide(call)
        if verdict is None:
            return self.service(environ, start_response)
        if verdict[0] == "hang":
            call.status = 0
            self.release.wait(60)
            raise ConnectionAbortedError("hung call dropped")  # the server closes the socket without an answer
        _kind, status, retry_after = verdict
        call.status, call.retry_after = status, retry_after
        answer = json.dumps({"title": "Slow down" if status == 429 else "Service Unavailable",
                             "status": status}).encode()
        start_response(f"{status} {'Too Many Requests' if status == 429 else 'Service Unavailable'}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(answer))),
            ("Retry-After", str(retry_after))])
        return [answer]


def serve_misbehaving(decide):
    """A started server (its `url`, `service`: the Misbehaving app, `service.service`: the reference service)."""
    app = Misbehaving(ReferenceService(SECRET), decide)
    return ReferenceServer(app).start()


def early_retries(calls, *, tolerance=0.05):
    """Calls sent again sooner than a refusal asked: for each endpoint and record, a call that came before the
    previous refusal's arrival plus its Retry-After (less `tolerance` seconds)."""
    refused_until, early = {}, []
    for call in calls:
        for key in call.keys:
            until = refused_until.get((call.method, call.path, key))
            if until is not None and call.at < until - tolerance:
                early.append({"call": f"{call.method} {call.path}", "record": key,
                              "too_early_by": round(until - call.at, 3)})
            if call.retry_after:
                refused_until[(call.method, call.path, key)] = call.at + call.retry_after
    return early
