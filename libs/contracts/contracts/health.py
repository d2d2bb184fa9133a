"""Whether a service answers: the ping its query path answers, asked by the gateway's ``/readyz``."""

from contracts.messages import Query
from contracts.registry import REGISTRY


@REGISTRY.register
class Ping(Query):
    """Does the service answer queries? Every service answers it with ``"pong"`` (the shared query wiring registers
    it), on ``Subjects.ping(service)``, through the same subscription as its other queries."""
