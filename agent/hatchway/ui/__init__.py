"""What the user sees while the agent runs.

* ``display``: the session's live status and the three ways to show it (a terminal screen,
  log lines, JSON lines).
* ``inspector``: the local web page that records, shows and replays exchanges.
* ``json_replies``: what loopback web pages share (the inspector here, and the local gateway's
  operator dashboard).
* ``loopback_http``: the inspector's small HTTP/1.1 server, on ``socketserver`` (``http.server``
  would bring ``ssl`` into the agent).
* ``limits``: what the inspector may keep in memory.

May import ``hatchway.serving``, ``hatchway.transport``, ``hatchway.protocol``,
``hatchway.errors`` and ``hatchway.version``; not the front doors that wire it up.
"""
