"""Worker entry points of notifications: each takes ids and calls one service."""


def deliver(delivery_id):
    """Send one delivery (an attempt); a failure is recorded and retried later by the sweep, never raised."""
    from notifications.deliveries import delivery_attempt

    delivery = delivery_attempt(delivery_id=delivery_id)
    return delivery.status if delivery is not None else None


def sweep():
    """Every minute (schedule "resync: notifications"): time-based rules, then deliveries whose retry is due."""
    from notifications.alerts import notifications_sweep

    return notifications_sweep()
