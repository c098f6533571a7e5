"""The long-running detector service: configuration, scheduler, state, HTTP API.

Import the submodules directly (`detector.service.config`, `.runner`, `.state`, `.app`);
nothing here is built at import time.
"""
