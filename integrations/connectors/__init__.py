"""The connector registry: provider key -> (label, dotted path), imported lazily."""

from django.utils.module_loading import import_string

CONNECTORS = {
    "sandbox": ("Sandbox", "integrations.connectors.sandbox.SandboxConnector"),
    "hubspot": ("HubSpot", "integrations.connectors.hubspot.HubSpotConnector"),
    "salesforce": ("Salesforce", "integrations.connectors.salesforce.SalesforceConnector"),
    "pipedrive": ("Pipedrive", "integrations.connectors.pipedrive.PipedriveConnector"),
    "jobber": ("Jobber", "integrations.connectors.jobber.JobberConnector"),
    "shopify": ("Shopify", "integrations.connectors.shopify.ShopifyConnector"),
    "postgres_table": ("PostgreSQL table", "integrations.connectors.postgres_table.PostgresTableConnector"),
    "connector_service": ("Connector service", "integrations.connectors.connector_service.ConnectorServiceConnector"),
}

PROVIDER_CHOICES = [(key, label) for key, (label, _path) in CONNECTORS.items()]


class UnknownProvider(LookupError):
    pass


def get_connector_class(provider):
    try:
        _label, path = CONNECTORS[provider]
    except KeyError:
        raise UnknownProvider(f"No connector for provider '{provider}'") from None
    return import_string(path)


def get_connector(connection):
    return get_connector_class(connection.provider)(connection)
