from core.runtime import configure_logging
from core.serve import serve_http
from services.console.deps import compose
from services.console.main import http_app
from services.console.settings import ConsoleSettings

settings = ConsoleSettings()
configure_logging(settings.log_level)
serve_http(http_app(compose(settings)), settings)
