"""Knative serving.knative.dev/v1 Service and Revision documents: rendered from homerun's
records for `describe` (render.py), and read with Knative's validation rules, every error at
its field path, for `homerun services replace` (models.py, reader.py). docs/knative.md lists
the fields homerun supports and refuses."""

from homerun.knative.models import (
    API_VERSION,
    DEFAULT_PORT,
    IMAGE_REGISTRY,
    SOURCE_ANNOTATION,
    image_for,
)
from homerun.knative.reader import (
    ServiceManifest,
    TemplateManifest,
    parse_probe,
    parse_service,
)
from homerun.knative.render import (
    RevisionView,
    ServiceView,
    ready_condition,
    render_revision,
    render_service,
    render_template,
    render_traffic_entry,
    timestamp,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_PORT",
    "IMAGE_REGISTRY",
    "SOURCE_ANNOTATION",
    "RevisionView",
    "ServiceManifest",
    "ServiceView",
    "TemplateManifest",
    "image_for",
    "parse_probe",
    "parse_service",
    "render_revision",
    "ready_condition",
    "render_service",
    "render_template",
    "render_traffic_entry",
    "timestamp",
]
