"""Celery configuration of the example: the broker is the streams transport.

``EXAMPLE_BROKER_URL`` names the broker (``redis-streams://host:port/db``) and
``EXAMPLE_RESULT_URL`` the Redis result backend. ``send.py`` and
``kombu-streams demo --celery`` set both.
"""

import os

from kombu import Exchange, Queue
from kombu.common import Broadcast

broker_url = os.environ.get("EXAMPLE_BROKER_URL", "redis-streams://127.0.0.1:6379/0")
result_backend = os.environ.get("EXAMPLE_RESULT_URL", "redis://127.0.0.1:6379/1")

broker_connection_retry_on_startup = True
broker_transport_options = {
    # A dead worker's tasks go to another worker after this many seconds; a
    # live worker keeps its tasks however long they run.
    "visibility_timeout": 300,
}

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 4

task_queues = (
    Queue("celery", Exchange("celery", "direct"), routing_key="celery"),
    Broadcast("example.broadcast"),
)
task_routes = {"tasks.announce": {"queue": "example.broadcast"}}
