"""HQ's console (``lpr-edge hq --web ADDR[:PORT]``): live hits across the fleet,
officers' decisions beside them, each vehicle's last status and position, and the
investigators' search, behind a login (users with scrypt password hashes, or a
trusted reverse proxy's header). Built on the shared web layer (:mod:`edge.web`)."""
