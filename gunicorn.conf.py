"""gunicorn's settings for the app, under gunicorn's default file name:
`gunicorn -c gunicorn.conf.py "backend:create_app()"` is the same as `lookalike serve`.

They live in the package (backend/gunicorn_conf.py) and come from the environment: GUNICORN_*, HOST and
PORT, listed in README's configuration table.
"""
from backend.gunicorn_conf import *  # noqa: F401,F403
