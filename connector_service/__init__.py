"""Resync's connector-service contract (docs/connector-service.md) and a reference service that implements it.

`connector_service.reference` is standard library only, so it runs anywhere Python 3.11 does and a customer can
read it as an example: `python -m connector_service.reference --port 8765 --secret whsec_...`.
"""
