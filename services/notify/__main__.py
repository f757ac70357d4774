from core.serve import serve_http
from services.notify.main import build_app
from services.notify.settings import NotifySettings

settings = NotifySettings()
serve_http(build_app(settings), settings)
