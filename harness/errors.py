"""manobench's errors, under one root, `ManobenchError`.

Anything the user can fix (a bad key, a bad value, a file that does not parse, a fault that does not fit the
design) is a `UserError`, which the CLI turns into one clear line and exit code 2; the other subclasses are
a part of the testbed failing (a proxy, the capture, tc, the load generator) and say which; anything else
is a bug and keeps its traceback. The fault library (the top-level `faults`, which imports nothing of the
harness) raises its own `faults.FaultError` for a fault that does not fit the run; the harness turns it into a
UserError where it drives the faults (harness.experiment.run), so the CLI's one line and exit code 2 stay
those of every user mistake.
"""


class ManobenchError(Exception):
    """The root of every error manobench raises on purpose."""


class UserError(ManobenchError):
    """Bad input from the user: reported as one line, exit code 2, no traceback."""


class TestbedError(ManobenchError):
    """A part of the testbed failed to start or to run (a service not ready, one that died while starting): the
    CLI prints what failed and the tail of its log, exit code 1, no traceback."""


class ConfigError(UserError):
    """An experiment configuration that breaks a rule; the message names the key and the rule."""
