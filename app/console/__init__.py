"""The admin console: server-rendered pages for people (tenant admins, operators, viewers) under `/console`.

htmx is pinned to 2.x (2.0.11, vendored): 4.0 has only just been released and changes rules the console relies on
(header inheritance becomes opt-in, the request-config event is renamed); 2.x is the maintained stable line. The
console uses only core attributes and one `htmx:configRequest` listener (the CSRF header), so moving to 4 later
is a small, deliberate change.
"""
