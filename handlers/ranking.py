"""TorchServe handler: ranking (`rank` entries of the sslzoo model store).

A thin adapter: all logic lives in :mod:`sslzoo.serving` (see ``sslzoo.serving.adapter.ServingAdapter``).
TorchServe calls ``handle(None, context)`` once to initialise, then ``handle(rows, context)`` per batch.
"""

from sslzoo.serving.adapter import ServingAdapter

_adapter = ServingAdapter("rank")


def handle(data, context):
    return _adapter(data, context)
