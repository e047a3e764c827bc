from django.urls import path

from syncs import views

urlpatterns = [
    path("", views.home, name="home"),
    path("overview/runs-in-progress/", views.runs_in_progress, name="runs_in_progress"),
    path("mappings/<uuid:code>/resume/", views.mapping_resume_view, name="mapping_resume"),
]
