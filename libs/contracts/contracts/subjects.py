"""Subject and stream names. Every name carries the environment prefix so that several environments
(a test run, a `make up`, CI) can share one NATS server without seeing each other's messages."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Subjects:
    env: str

    # Streams -----------------------------------------------------------------
    @property
    def commands_stream(self) -> str:
        return f"{self.env}_COMMANDS"

    @property
    def events_stream(self) -> str:
        return f"{self.env}_EVENTS"

    @property
    def tasks_stream(self) -> str:
        return f"{self.env}_TASKS"

    @property
    def outcomes_stream(self) -> str:
        return f"{self.env}_OUTCOMES"

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.env}_DEADLETTER"

    # Subjects ----------------------------------------------------------------
    def command(self, service: str, workspace_id: str, command_type: str) -> str:
        return f"{self.env}.cmd.{service}.{workspace_id}.{command_type}"

    def commands_of(self, service: str) -> str:
        return f"{self.env}.cmd.{service}.>"

    def command_parts(self, subject: str) -> tuple[str, str, str] | None:
        """``(service, workspace, command type)`` of a command subject; None for any other subject."""
        parts = subject.split(".")
        if len(parts) != 5 or parts[:2] != [self.env, "cmd"]:
            return None
        return parts[2], parts[3], parts[4]

    def event(self, aggregate: str, workspace_id: str, aggregate_id: str, event_type: str) -> str:
        return f"{self.env}.evt.{aggregate}.{workspace_id}.{aggregate_id}.{event_type}"

    def events_of(self, aggregate: str, event_type: str | None = None) -> str:
        """Every event of an aggregate type, or only those of one event type."""
        if event_type is None:
            return f"{self.env}.evt.{aggregate}.>"
        return f"{self.env}.evt.{aggregate}.*.*.{event_type}"

    def task(self, workspace_id: str, agent_id: str) -> str:
        return f"{self.env}.task.{workspace_id}.{agent_id}"

    def inbox(self, workspace_id: str, agent_id: str) -> str:
        return f"{self.env}.agent.{workspace_id}.{agent_id}.inbox"

    def neptune_turn(self, workspace_id: str, turn_id: str) -> str:
        """Core NATS: a Neptune turn's live events, which the gateway relays to the person as Server-Sent Events."""
        return f"{self.env}.neptune.turn.{workspace_id}.{turn_id}"

    def outcome(self, workspace_id: str, command_id: str) -> str:
        return f"{self.env}.outcome.{workspace_id}.{command_id}"

    def query(self, service: str, workspace_id: str, query_type: str) -> str:
        return f"{self.env}.qry.{service}.{workspace_id}.{query_type}"

    def ping(self, service: str) -> str:
        """Where ``service`` answers a Ping: a query of no workspace (``_`` is no workspace's id)."""
        return self.query(service, "_", "Ping")

    def queries_of(self, service: str) -> str:
        return f"{self.env}.qry.{service}.>"

    def dead_letter(self, original_subject: str) -> str:
        return f"{self.env}.dlq.{original_subject.removeprefix(self.env + '.')}"

    def database(self, service: str) -> str:
        return f"{self.env}_{service}".replace("-", "_")

    def durable(self, service: str, purpose: str) -> str:
        return f"{self.env}_{service}_{purpose}".replace("-", "_")
