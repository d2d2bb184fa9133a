"""Composition root of the neptune service."""

from fastapi import FastAPI

from neptune.settings import NeptuneSettings
from servicekit.runtime import create_app


def build_app(settings: NeptuneSettings) -> FastAPI:
    return create_app(settings, title="neptune")
