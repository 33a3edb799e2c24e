"""The front door's pure core: identity, authorization, decision, caches, JWTs.

The aiohttp server that does the I/O is `kftenancy.servers.gateway`.
"""
