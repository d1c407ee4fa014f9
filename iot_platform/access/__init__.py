"""Who may talk to the broker: the device registry and the broker's access configuration.

``names`` and ``state`` are pure (ids, user names, ACLs, the desired dynsec state, the drift between
desired and actual); ``dynsec``, ``registry`` and ``operations`` are the thin shells that talk to
Mosquitto's dynamic-security plugin and PostgreSQL; the ``*_cli`` modules are the commands.
"""
