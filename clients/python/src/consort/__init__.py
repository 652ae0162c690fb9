"""Python client of a Consort daemon.

:class:`Client` reads and writes the replicated state, watches it, sends pulses and messages,
listens to the group, calls services and serves them. :mod:`consort.p2plib` has info-beamer's
``PeerGroup`` on top of the same daemon. The daemon is found as the ``consort`` CLI finds it
(``CONSORT_API``, else ``http://127.0.0.1:7471``)::

    from consort import Client

    client = Client()
    client.set("kitchen/light/on", True)
    print(client.get("kitchen/light/on").value)
"""

from .client import Client, Target
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConsortError,
    DaemonUnreachable,
    DeliveryTimeout,
    Forbidden,
    NotFound,
    ProviderError,
    Unauthorized,
    Unavailable,
)
from .model import (
    Change,
    Entry,
    Event,
    Json,
    Lagged,
    Leader,
    Peer,
    Pulse,
    Reply,
    Status,
    WatchEvent,
    Written,
)
from .streams import Listener, Subscription, Watch

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "BadRequest",
    "Change",
    "Client",
    "Conflict",
    "ConsortError",
    "DaemonUnreachable",
    "DeliveryTimeout",
    "Entry",
    "Event",
    "Forbidden",
    "Json",
    "Lagged",
    "Leader",
    "Listener",
    "NotFound",
    "Peer",
    "ProviderError",
    "Pulse",
    "Reply",
    "Status",
    "Subscription",
    "Target",
    "Unauthorized",
    "Unavailable",
    "Watch",
    "WatchEvent",
    "Written",
]
