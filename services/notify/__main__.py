from core.serve import serve_http
from services.notify.deps import compose
from services.notify.main import http_app
from services.notify.settings import NotifySettings

settings = NotifySettings()
serve_http(http_app(compose(settings)), settings)
