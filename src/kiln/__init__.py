"""kiln: a unified backend runtime for Python.

An application is a folder of three files (``schema.graphql``, ``config.yaml``,
``resources.py``); ``kiln run APP_DIR`` serves it. Importing this package does
nothing beyond defining names: no database is opened and no config is read.
"""

from kiln import errors

__version__ = "0.1.0"

__all__ = ["__version__", "errors"]
