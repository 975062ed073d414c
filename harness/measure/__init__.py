"""Measurement helpers that sit beside the services: what was counted on the wire, not what the services say."""
