"""Stable, machine-readable error codes."""

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Machine-readable error codes; never renamed once published."""

    MALFORMED_JSON = "malformed_json"
    BAD_REQUEST = "bad_request"
    VALIDATION_FAILED = "validation_failed"
    UNKNOWN_FIELD = "unknown_field"
    TOO_DEEP = "too_deep"
    UNSTORABLE_VALUE = "unstorable_value"
    BODY_TOO_LARGE = "body_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    CONFLICT = "conflict"
    CONCURRENCY_CONFLICT = "concurrency_conflict"
    INVALID_TRANSITION = "invalid_transition"
    AGENT_NOT_FOUND = "agent_not_found"
    AGENT_RETIRED = "agent_retired"
    TEAM_NOT_FOUND = "team_not_found"
    TEAM_ARCHIVED = "team_archived"
    UNKNOWN_MEMBER = "unknown_member"
    INVALID_TEAM = "invalid_team"
    UNKNOWN_COMMAND = "unknown_command"
    INVALID_WORKFLOW = "invalid_workflow"
    WORKFLOW_NOT_FOUND = "workflow_not_found"
    WORKFLOW_ARCHIVED = "workflow_archived"
    EXECUTION_NOT_FOUND = "execution_not_found"
    TEMPLATE_NOT_FOUND = "template_not_found"
    MEMORY_NOT_FOUND = "memory_not_found"
    VERSION_CONFLICT = "version_conflict"
    ENTRY_TOO_LARGE = "entry_too_large"
    TOO_MANY_ENTRIES = "too_many_entries"
    QUERY_TOO_LONG = "query_too_long"
    RESULT_TOO_LARGE = "result_too_large"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"
    HEADERS_TOO_LARGE = "headers_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    # Team runs and coordinations
    TEAM_RUN_NOT_FOUND = "team_run_not_found"
    NO_RUNNABLE_MEMBER = "no_runnable_member"
    # Messaging
    THREAD_NOT_FOUND = "thread_not_found"
    THREAD_FULL = "thread_full"
    # Delegation
    DELEGATION_NOT_FOUND = "delegation_not_found"
    DELEGATION_LOOP = "delegation_loop"
    DELEGATION_TOO_DEEP = "delegation_too_deep"
    NO_AGENT = "no_agent"
    # Neptune
    CONVERSATION_NOT_FOUND = "conversation_not_found"
    FORBIDDEN = "forbidden"


class DomainError(Exception):
    """A rule of the domain refused the command; carries a stable error code."""

    code: ErrorCode = ErrorCode.CONFLICT

    def __init__(self, message: str, code: ErrorCode | None = None, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details = details or []
