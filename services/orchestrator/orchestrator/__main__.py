from orchestrator.main import build_app
from orchestrator.settings import OrchestratorSettings
from servicekit.runtime import serve

settings = OrchestratorSettings()
serve(build_app(settings), settings)
