from django.urls import path

from syncs import views

urlpatterns = [
    path("", views.home, name="home"),
]
