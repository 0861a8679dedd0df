"""An application's settings: ``config.yaml``, ``KILN_*`` variables and command-line options.

Every setting is one :class:`Setting` in :data:`SETTINGS`; the environment
names, error suggestions and docs are all derived from that tuple. To add a
setting, add a :class:`Setting` entry and a field of the same name (in
snake_case) to its section's dataclass in :mod:`kiln.config.settings`.

:func:`load_config` reads the settings, each from the first place that gives
it: the command line, then the environment, then ``APP_DIR/config.yaml``, then
the default. Nothing is read at import.

The package splits along those steps: :mod:`kiln.config.kinds` says what a
value may be, :mod:`kiln.config.settings` lists the settings and the
:class:`Config` that holds them, and :mod:`kiln.config.loader` reads them.
"""

from kiln.config.kinds import (
    BOOL,
    DURATION,
    MAP,
    ORIGINS,
    PORT,
    SIZE,
    STRING,
    InvalidValue,
    Kind,
    choice,
    directory,
)
from kiln.config.loader import load_config
from kiln.config.settings import (
    CONFIG_FILE,
    ENV_PREFIX,
    RESERVED_ENV,
    SETTINGS,
    AuthenticationConfig,
    Config,
    HttpConfig,
    LoggingConfig,
    MqttConfig,
    QueryConfig,
    RealtimeConfig,
    Setting,
    Source,
    StorageConfig,
    env_name,
)

__all__ = [
    "BOOL",
    "CONFIG_FILE",
    "DURATION",
    "ENV_PREFIX",
    "MAP",
    "ORIGINS",
    "PORT",
    "RESERVED_ENV",
    "SETTINGS",
    "SIZE",
    "STRING",
    "AuthenticationConfig",
    "Config",
    "HttpConfig",
    "InvalidValue",
    "Kind",
    "LoggingConfig",
    "MqttConfig",
    "QueryConfig",
    "RealtimeConfig",
    "Setting",
    "Source",
    "StorageConfig",
    "choice",
    "directory",
    "env_name",
    "load_config",
]
