from core.runtime import configure_logging
from core.serve import serve_http
from services.console.main import build_app
from services.console.settings import ConsoleSettings

settings = ConsoleSettings()
configure_logging(settings.log_level)
serve_http(build_app(settings), settings)
