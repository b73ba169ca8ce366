"""How the agent reaches the relay and the local app: bytes on sockets, nothing about tunnels.

* ``http1``: a small HTTP/1.1 client (the local app, the relay's blob store).
* ``wire``: WebSocket frames on the agent's connection to the relay.
* ``handshake``: opening that WebSocket (TCP, TLS, the RFC 6455 upgrade with the token).
* ``proxy``: whether to go through the HTTP proxy the environment names.
* ``blobs``: bodies to and from the blob store through presigned URLs.

May import ``hatchway.protocol``, ``hatchway.errors`` and ``hatchway.version``; nothing that
serves tunnels or that the user sees.
"""
