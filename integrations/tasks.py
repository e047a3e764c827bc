"""Worker entry points for integrations: each fetches by id and calls one service."""


def process_webhook_event(event_pk):
    from integrations.webhooks import webhook_event_process

    event = webhook_event_process(event_pk=event_pk)
    return event.status if event is not None else None


def requeue_lost_webhook_events():
    """Periodic: events whose processing task was lost (still received after 10 minutes) are queued again."""
    from integrations.webhooks import webhook_events_requeue_lost

    return webhook_events_requeue_lost()
