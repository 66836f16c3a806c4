"""Settings: one TOML file plus ``MAMMOGATE_<SECTION>__<KEY>`` environment overrides.

Only this package reads settings; everything else receives a :class:`Settings` as an argument.

Errors:
    ConfigError -- the file is missing or unreadable, or a value is invalid; the message names the key.
"""

from mammogate.config.settings import (
    DESTINATION_KINDS,
    EXAM_CATEGORIES,
    TEXT_CLAUSES,
    ConfigError,
    DatabaseSettings,
    Destination,
    DicomDestinationSettings,
    DicomSettings,
    HttpDestinationSettings,
    Match,
    ModelSettings,
    NodeSettings,
    PolicyError,
    Route,
    SenderSettings,
    Settings,
    StartupError,
    WebSettings,
    WorkerSettings,
    load_settings,
)

__all__ = [
    "DESTINATION_KINDS",
    "EXAM_CATEGORIES",
    "TEXT_CLAUSES",
    "ConfigError",
    "DicomDestinationSettings",
    "HttpDestinationSettings",
    "Match",
    "DatabaseSettings",
    "Destination",
    "DicomSettings",
    "ModelSettings",
    "NodeSettings",
    "Route",
    "SenderSettings",
    "Settings",
    "PolicyError",
    "StartupError",
    "WebSettings",
    "WorkerSettings",
    "load_settings",
]
