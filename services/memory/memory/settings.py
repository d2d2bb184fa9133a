from servicekit.settings import ServiceSettings


class MemorySettings(ServiceSettings):
    service_name: str = "memory"
    http_port: int = 8003
