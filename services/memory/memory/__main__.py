from memory.main import build_app
from memory.settings import MemorySettings
from servicekit.runtime import serve

settings = MemorySettings()
serve(build_app(settings), settings)
