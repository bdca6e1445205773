"""The web console: a Starlette app over the public Admin and Consumer APIs.

Runs in its own process (``plinth console``, or the child ``plinth serve``
starts), never in a router's: its pages and its sampler must not take the
data path's GIL. Modules, one concept each:

- config.py: ConsoleConfig, the options, and the refusal to listen beyond
  loopback without login and TLS.
- auth.py: the auth file (tokens and HTTP basic users, scrypt hashes) and the
  middleware that answers 401.
- cross_site.py: CrossSiteGuard, the middleware that forbids framing and
  refuses changes posted from other sites.
- confirm_tokens.py: ConfirmTokens, the tokens that bind a change's apply to
  the exact plan its confirmation showed, its user, and a lifetime.
- context.py: ConsoleContext, what every page reaches through
  ``request.app.state.console``.
- app.py: ``create_app``, the routes, and the error pages.
- sampler.py: the overview's sampler and its ring buffer (runs only while a
  browser watches), charts.py: its SVG charts.
- pages_overview.py, pages_topics.py (with topic_listing.py): the pages.
- runner.py: serving the app with uvicorn, and exiting with a parent process.
"""
