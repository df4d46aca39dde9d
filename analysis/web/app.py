"""The Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask

from analysis.backends import Backends
from analysis.config import ConfigError, Settings, load_settings
from analysis.logs import configure_logging
from analysis.web import errors, metrics
from analysis.web.routes import bp

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    if not settings.api_key_list:
        raise ConfigError("invalid configuration: API_KEYS: set at least one key (comma-separated)")
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.json.sort_keys = False
    # Storage is not touched here: the deployment creates the records container and the
    # queues, and /readyz reports storage until it answers.
    Backends(settings).init_app(app)
    errors.init_app(app)
    metrics.init_app(app)
    app.register_blueprint(bp)
    return app
