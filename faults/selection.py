"""Which instances `fault_target` names: ids, or `role:NAME` for every instance of a role. Read by the faults
by instance (faults.instances) and by a runner that checks a target file's names before anything starts."""

from __future__ import annotations

from collections.abc import Mapping

from faults.contract import FaultError

ROLE_PREFIX = "role:"


def select_instances(roles: Mapping[str, str], aims: list[str]) -> list[str]:
    """The instance ids `aims` names, in the deployment's order (`roles`: id -> role), each once; a name that
    matches nothing is a FaultError naming what there is."""
    chosen: list[str] = []
    for aim in aims:
        if aim.startswith(ROLE_PREFIX):
            role = aim[len(ROLE_PREFIX):]
            found = [svc for svc, r in roles.items() if r == role]
            if not found:
                known = ", ".join(sorted(set(roles.values())))
                raise FaultError(f"fault_target: no instance has role {role!r} (roles: {known})")
        elif aim in roles:
            found = [aim]
        else:
            raise FaultError(f"fault_target: {aim!r} is not an instance (instances: {', '.join(roles)})")
        chosen += [svc for svc in found if svc not in chosen]
    return chosen
