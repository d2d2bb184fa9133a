"""The gateway: the platform's REST API. Owns workspaces and API keys; no domain state."""
