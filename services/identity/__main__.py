from core.serve import serve_http
from services.identity.main import build_app
from services.identity.settings import IdentitySettings

settings = IdentitySettings()
serve_http(build_app(settings), settings)
