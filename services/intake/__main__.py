from core.serve import serve_http
from services.intake.main import build_app
from services.intake.settings import IntakeSettings

settings = IntakeSettings()
serve_http(build_app(settings), settings)
