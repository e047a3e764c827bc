"""Channels, alert rules, alerts and deliveries arrive with the notifications issue."""
