"""The event stream's emitter, now in the protocol package (old import path; see protocol/events.py)."""

from protocol.events import EventSink

__all__ = ["EventSink"]
