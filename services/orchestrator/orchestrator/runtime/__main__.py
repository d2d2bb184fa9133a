from orchestrator.runtime.main import build_app
from orchestrator.settings import RuntimeSettings
from servicekit.runtime import serve

settings = RuntimeSettings()
serve(build_app(settings), settings)
