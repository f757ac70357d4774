from core.serve import serve_http
from services.intake.deps import compose
from services.intake.main import http_app
from services.intake.settings import IntakeSettings

settings = IntakeSettings()
serve_http(http_app(compose(settings)), settings)
