"""lookalike: content-based image search (VGG16 descriptors, embedded or Elasticsearch store)."""


def create_app(settings=None, **options):
    """The Flask application (backend.api.create_app); imported on call, so `import backend` stays light."""
    from .api import create_app as _create_app
    return _create_app(settings, **options)
