"""What the system under test and the harness both speak, and nothing else: the contract a third party
implements to test their own orchestrator with manobench (docs/targets.md).

- `protocol.spec`: the service spec (MANOBENCH_SPEC) every instance is started with, and host:port parsing.
- `protocol.messages`: the three planes and their ports, the routes each role serves, body padding.
- `protocol.events`: the event stream (JSON lines over TCP to the harness's collector), every event kind
  with its fields, and `EventSink`, a reference emitter.

Neither side imports the other: `targets/` (the reference services) and `harness/` both import this.
"""
