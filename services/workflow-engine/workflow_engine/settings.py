from servicekit.settings import ServiceSettings


class WorkflowEngineSettings(ServiceSettings):
    service_name: str = "workflow-engine"
    http_port: int = 8002
