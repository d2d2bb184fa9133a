from servicekit.settings import ServiceSettings


class NeptuneSettings(ServiceSettings):
    service_name: str = "neptune"
    http_port: int = 8004
