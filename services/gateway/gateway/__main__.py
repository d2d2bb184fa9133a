from gateway.main import build_app
from gateway.settings import GatewaySettings
from servicekit.runtime import serve

settings = GatewaySettings()
serve(build_app(settings), settings)
