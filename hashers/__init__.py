"""Hashing methods: one file per method, the shared maths and trainer, and the registry
(``hashers.registry``) every stage builds them from."""
