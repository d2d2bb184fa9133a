"""Stable, machine-readable error codes."""

from enum import StrEnum


class ErrorCode(StrEnum):
    """Machine-readable error codes; never renamed once published."""

    MALFORMED_JSON = "malformed_json"
    BAD_REQUEST = "bad_request"
    VALIDATION_FAILED = "validation_failed"
    UNKNOWN_FIELD = "unknown_field"
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
    AGENT_NAME_TAKEN = "agent_name_taken"
    UNKNOWN_COMMAND = "unknown_command"
    INVALID_WORKFLOW = "invalid_workflow"
    WORKFLOW_NOT_FOUND = "workflow_not_found"
    WORKFLOW_ARCHIVED = "workflow_archived"
    EXECUTION_NOT_FOUND = "execution_not_found"
    TEMPLATE_NOT_FOUND = "template_not_found"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"
