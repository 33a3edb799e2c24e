"""The long-running servers (aiohttp): the admission webhook and the gateway."""
