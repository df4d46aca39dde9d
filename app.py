"""WSGI entry point: ``gunicorn app:app`` (see bin/web)."""

from analysis.web.app import create_app

app = create_app()
