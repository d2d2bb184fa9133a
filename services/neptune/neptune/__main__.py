from neptune.main import build_app
from neptune.settings import NeptuneSettings
from servicekit.runtime import serve

settings = NeptuneSettings()
serve(build_app(settings), settings)
