from django.apps import AppConfig


class SyncsConfig(AppConfig):
    name = "syncs"
