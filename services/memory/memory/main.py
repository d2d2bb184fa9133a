"""Composition root of the memory service."""

from fastapi import FastAPI

from memory.settings import MemorySettings
from servicekit.runtime import create_app


def build_app(settings: MemorySettings) -> FastAPI:
    return create_app(settings, title="memory")
