"""pandas for analysts: raw telemetry and live hourly rollups as typed DataFrames, under row-level security.

>>> from iot_platform.analytics import Reader
>>> with Reader.for_tenant("acme") as db:  # doctest: +SKIP
...     hourly = db.rollups(since, until)

See :class:`Reader` and the README's "For analysts".
"""

from iot_platform.analytics.frames import FieldType
from iot_platform.analytics.reader import Reader, ReaderLoginError, TruncatedResultWarning

__all__ = ["FieldType", "Reader", "ReaderLoginError", "TruncatedResultWarning"]
