"""The domain: formats, decisions, inputs, services, and the periodic jobs that act on it."""
