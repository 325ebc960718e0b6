"""The web layer shared by the in-car console and HQ's console: a Starlette app run
under uvicorn in a thread its owner starts and stops (:mod:`edge.web.server`),
server-sent events that never hold up the pipeline (:mod:`edge.web.events`), token
login with sessions and CSRF checks (:mod:`edge.web.auth`), security headers, an
escaping Jinja2 environment and the packaged static files (:mod:`edge.web.app`).

It imports only the low shared modules: a page is built on top of it by its owner.
"""
