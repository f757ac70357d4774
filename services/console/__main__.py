from core.serve import serve_http
from services.console.main import build_app
from services.console.settings import ConsoleSettings

settings = ConsoleSettings()
serve_http(build_app(settings), settings)
