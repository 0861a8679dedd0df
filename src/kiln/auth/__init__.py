"""Security: who a request comes from and what it may do.

One job per module: :mod:`~kiln.auth.passwords` (argon2id hashes),
:mod:`~kiln.auth.users` (the system database of users and secrets),
:mod:`~kiln.auth.roles` (``roles:`` in ``config.yaml`` → permissions),
:mod:`~kiln.auth.tokens` (bearer JWTs), :mod:`~kiln.auth.limiter` (failed-login
back-off), :mod:`~kiln.auth.authenticate` (credentials → user, for every
protocol), :mod:`~kiln.auth.access` (what a user may read and write of a table),
:mod:`~kiln.auth.cors` (cross-origin policy), :mod:`~kiln.auth.security` (all of
it opened for one app) and :mod:`~kiln.auth.accounts` (``kiln user``). Importing
this package imports none of them.
"""
