"""Neptune, the built-in assistant: chat intents turned into gateway calls.

So far the service joins the platform (NATS, MongoDB, health and readiness); its domain lands with its issue."""
