"""Serving tunnels: the agent's session with the relay and what it does with each request.

* ``session``: connect, hello, welcome, then serve until closed; ``connection``: one WebSocket
  connection's reader and ticker; ``sharing``: the short session behind ``hatchway share``.
* ``tunnels``: each tunnel's options, header rules and the router to its local app;
  ``forward``: one request to the local app, byte-exact and only to its target.
* ``inflight``, ``answers``, ``tunnel_stats``, ``bodies``: what a connection keeps about the
  requests it holds, the answers it sent, and how its tunnels are doing.

May import ``hatchway.transport``, ``hatchway.protocol``, ``hatchway.errors`` and
``hatchway.version``; nothing the user sees (``hatchway.ui``) and not the front doors.
"""
