from core.serve import serve_http
from services.routing.main import build_app
from services.routing.settings import RoutingSettings

settings = RoutingSettings()
serve_http(build_app(settings), settings)
