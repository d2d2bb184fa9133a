from servicekit.runtime import serve
from workflow_engine.main import build_app
from workflow_engine.settings import WorkflowEngineSettings

settings = WorkflowEngineSettings()
serve(build_app(settings), settings)
