"""The orchestrator service: owns agents (and, as the platform grows, teams, runs and delegations)."""
