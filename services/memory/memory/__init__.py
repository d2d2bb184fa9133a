"""Three-tier shared memory for agents, with retrieval.

So far the service joins the platform (NATS, MongoDB, health and readiness); its domain lands with its issue."""
