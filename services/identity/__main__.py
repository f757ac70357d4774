from core.serve import serve_http
from services.identity.deps import compose
from services.identity.main import http_app
from services.identity.settings import IdentitySettings

settings = IdentitySettings()
serve_http(http_app(compose(settings)), settings)
