"""The outbox, its drain and transports, unsubscribe links."""
