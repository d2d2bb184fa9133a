"""Composition root of the workflow-engine service."""

from fastapi import FastAPI

from servicekit.runtime import create_app
from workflow_engine.settings import WorkflowEngineSettings


def build_app(settings: WorkflowEngineSettings) -> FastAPI:
    return create_app(settings, title="workflow-engine")
