"""Workflow definitions and executions (event-sourced).

So far the service joins the platform (NATS, MongoDB, health and readiness); its domain lands with its issue."""
