from core.serve import serve_http
from services.routing.deps import compose
from services.routing.main import application
from services.routing.settings import RoutingSettings

settings = RoutingSettings()
serve_http(application(compose(settings)), settings)
