"""kiln: a unified backend runtime for Python.

An application is a folder of three files (``schema.graphql``, ``config.yaml``,
``resources.py``); ``kiln run APP_DIR`` serves it. Importing this package does
nothing beyond defining names: no database is opened and no config is read.
:data:`tables` stays empty until :func:`kiln.app.load_app` fills it with the
schema's table classes, just before it imports the app's ``resources.py``.
"""

from kiln import errors
from kiln.namespace import tables
from kiln.resource import Context, RequestTarget, Resource, Response, Table
from kiln.transaction import transaction

__version__ = "0.1.0"

__all__ = [
    "Context",
    "RequestTarget",
    "Resource",
    "Response",
    "Table",
    "__version__",
    "errors",
    "tables",
    "transaction",
]
