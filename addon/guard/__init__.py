"""The guards around every exchange: who may use the proxy (`access`), keys kept secret (`secrets`),
upstream time limits and broken streams (`timeouts`), and JSON instead of mitmproxy's HTML error
page (`errorpage`). `addon.proxy` calls them in one fixed order; none of them is an addon of its own
except `secrets.KeyInjector`, which must be the last addon of mitmproxy's chain."""
