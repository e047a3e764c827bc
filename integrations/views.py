"""The public webhook receiver: no login, no CSRF (the signature authenticates), answers at once."""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from config.api import PROBLEM_CONTENT_TYPE, problem
from integrations.webhooks import MAX_BODY_BYTES, webhook_body_too_large, webhook_receive


def _answer(status_code, body, **headers):
    content_type = PROBLEM_CONTENT_TYPE if status_code >= 400 else "application/json"
    return JsonResponse(body, status=status_code, content_type=content_type, headers=headers or None)


@csrf_exempt
def webhook_receive_view(request, code):
    if request.method != "POST":
        body = problem(405, code="method_not_allowed", detail="Webhooks are delivered with POST.")
        return _answer(405, body, Allow="POST")
    try:
        declared_length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared_length = 0
    if declared_length > MAX_BODY_BYTES:
        return _answer(*webhook_body_too_large())
    # read() rather than request.body: a body is never held in memory past the limit, whatever it declares.
    raw_body = request.read(MAX_BODY_BYTES + 1)
    if len(raw_body) > MAX_BODY_BYTES:
        return _answer(*webhook_body_too_large())
    status_code, body = webhook_receive(code=code, method=request.method, url=request.build_absolute_uri(),
                                        headers=request.headers, raw_body=raw_body)
    return _answer(status_code, body)
