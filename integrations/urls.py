from django.urls import path

from integrations import views

app_name = "integrations"

urlpatterns = [
    # Any code answers problem JSON (an unknown one 404), so the code is a str here, checked by the service.
    path("<str:code>/", views.webhook_receive_view, name="webhook-receive"),
    # Without the slash too: APPEND_SLASH would redirect, and a sender following a redirect drops the POST.
    path("<str:code>", views.webhook_receive_view),
]
