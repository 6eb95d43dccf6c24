"""The HTTP API, its OpenAPI document and `tourno serve`."""
