"""manobench's client of OpenStack Tacker (protocol.client.Client): one workflow = create a VNF instance,
instantiate it (SOL003 v2), and, once that completed, terminate it and delete the instance.

`open` onboards one VNF package (the one-VDU CSAR of csar.py, built into the client's workdir unless the
options name one) through the package API (vnfpkgm v1): create, upload, wait for ONBOARDED; recorded as the
client action `onboarded`. `invoke(req, deadline)`:

    POST /vnflcm/v2/vnf_instances                 -> 201, the instance
    POST /vnflcm/v2/vnf_instances/{id}/instantiate -> 202, Location: the operation (lcmocc)
    GET  /vnflcm/v2/vnf_lcm_op_occs/{op}           every `poll` s until an end state or the deadline
    then, if COMPLETED: POST .../terminate (FORCEFUL), poll it the same way, DELETE the instance.

Terminate is part of the measured workflow (option `terminate: false` leaves the instance instantiated and
ends the workflow at the instantiate's COMPLETED). Outcomes:

| instantiate (then terminate)                    | Outcome                                         |
|-------------------------------------------------|-------------------------------------------------|
| COMPLETED, terminate COMPLETED, instance deleted | ok, state COMPLETED (detail.error if the op    |
|                                                  | carries one: completed-with-error)             |
| FAILED_TEMP / FAILED / ROLLED_BACK               | fail, state = it (detail.phase: which op)      |
| still STARTING/PROCESSING/... at the deadline    | info, state = the last seen (PROCESSING=stuck) |
| the API unreachable, an unexpected answer        | info, state = the last seen, detail.error      |

A FAILED_TEMP may be retried by the operator (`POST .../retry`), only with the option `retry: true`: each
retry is recorded as the client action `retry` (req, op, phase, status of the answer) and the workflow goes
on polling; `retries` (default 1) bounds them per operation. `failed_temp_settle` (s, default 0) keeps
polling a FAILED_TEMP that long before calling it a failure: Tacker's start-up sweep marks a live operation
FAILED_TEMP and it may still end COMPLETED.

Options (the target file's client_options): `vim` (the VIM stub's base URL; else the entry with a `vim`
plane), `api` (else the entry with an `api` plane), `poll` (s, 0.2), `retry` (false), `retries` (1),
`terminate` (true), `failed_temp_settle` (0), `csar` (a CSAR path, relative to the target file's folder),
`sol001_dir` (where the ETSI SOL001 type files are; default: the installed Tacker's), `onboard_timeout` (60),
`onboard_attempts` (5) and `onboard_stuck_after` (8 s): a package still PROCESSING after that long, or whose
status answers 5xx (half-written rows), is given up and a new one uploaded (two conductors race on the
package's `downloading` counter: NOTES.md); an ONBOARDED one is tried `onboard_settle` (1 s) later with a VNF
instance created and deleted, and given up if that fails.

Needs aiohttp and, for the CSAR, the installed Tacker's type files; nothing of Tacker is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

try:
    from protocol.client import ClientSetup, Outcome
except ImportError:  # run from a checkout without manobench installed: the repository's root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from protocol.client import ClientSetup, Outcome

if __package__:
    from . import csar as csar_mod
else:  # loaded as a top-level module (its folder on sys.path)
    import csar as csar_mod  # type: ignore[no-redef]

END_OK = "COMPLETED"
END_FAIL = ("FAILED_TEMP", "FAILED", "ROLLED_BACK")
VIM_ID = "manobench-vim"
USER_ID = "7a1b8f0e0c1d4e2fa3b4c5d6e7f80910"
PROJECT_ID = "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c"  # noauth: any UUID; Tacker checks it is one
HEADERS = {"X-User-Id": USER_ID, "X-Project-Id": PROJECT_ID, "X-Roles": "admin", "Accept": "application/json"}
V2 = {"Version": "2.0.0"}  # the v2 (SOL003 v3.x) API needs it


class TackerError(Exception):
    """An answer the workflow cannot go on from (the status, the body); `status` None when there was none."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _entry(entries: dict[str, dict[str, str]], plane: str) -> str | None:
    for planes in entries.values():
        if plane in planes:
            return planes[plane]
    return None


def _url(addr: str) -> str:
    return addr if addr.startswith(("http://", "https://")) else f"http://{addr}"


class TackerClient:
    """protocol.client.Client for Tacker's SOL003 v2 API (see the module doc)."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.setup: ClientSetup | None = None
        self.api = ""
        self.vim = ""
        self.vnfd_id = ""
        self.package_id = ""
        self.opts: dict[str, Any] = {}

    # --- the protocol -------------------------------------------------------------------------------------

    async def open(self, setup: ClientSetup) -> None:
        self.setup, self.opts = setup, dict(setup.options or {})
        api = self.opts.get("api") or _entry(setup.entries, "api")
        vim = self.opts.get("vim") or _entry(setup.entries, "vim")
        if not api or not vim:
            raise ValueError(f"tacker client: needs the API and the VIM stub's addresses (entries with planes api "
                             f"and vim, or options api/vim); entries: {setup.entries}")
        self.api, self.vim = _url(api).rstrip("/"), _url(vim).rstrip("/")
        self.session = aiohttp.ClientSession(headers=HEADERS, timeout=aiohttp.ClientTimeout(total=30),
                                             connector=aiohttp.TCPConnector(limit=64))
        await self.onboard()

    async def close(self) -> None:
        if self.session is not None:
            with contextlib.suppress(Exception):
                await self.session.close()
            self.session = None

    async def invoke(self, req: str, deadline: float) -> Outcome:
        until = time.monotonic() + float(deadline)
        detail: dict[str, Any] = {"phase": "create"}
        t0 = time.monotonic()
        try:
            inst = await self._post(f"{self.api}/vnflcm/v2/vnf_instances",
                                    {"vnfdId": self.vnfd_id, "vnfInstanceName": f"manobench-{req}",
                                     "vnfInstanceDescription": f"manobench workflow {req}"}, (201,))
            inst_id = inst["id"]
            detail.update(instance=inst_id, t_create=round(time.monotonic() - t0, 4), phase="instantiate")
            op = await self._start_op(f"{self.api}/vnflcm/v2/vnf_instances/{inst_id}/instantiate",
                                      self._instantiate_body(), until, detail)
            detail["instantiate"] = op
            state, occ = await self._follow(req, op, "instantiate", until, detail)
            detail["t_instantiate"] = round(time.monotonic() - t0, 4)
            if state != END_OK:
                return self._ended(state, occ, detail)
            if occ.get("error"):
                detail["error"] = occ["error"]  # completed with an error attached (e.g. after the sweep)
            if not self.opts.get("terminate", True):
                return Outcome("ok", state=END_OK, detail=detail)
            detail["phase"] = "terminate"
            t1 = time.monotonic()
            op = await self._start_op(f"{self.api}/vnflcm/v2/vnf_instances/{inst_id}/terminate",
                                      {"terminationType": "FORCEFUL"}, until, detail)
            detail["terminate"] = op
            state, occ = await self._follow(req, op, "terminate", until, detail)
            detail["t_terminate"] = round(time.monotonic() - t1, 4)
            if state != END_OK:
                return self._ended(state, occ, detail)
            detail["phase"] = "delete"
            await self._while_busy(lambda: self._request("DELETE", f"{self.api}/vnflcm/v2/vnf_instances/{inst_id}",
                                                         None, (204,), V2), until, detail)
            detail["phase"] = "done"
            detail["t_total"] = round(time.monotonic() - t0, 4)
            return Outcome("ok", state=END_OK, detail=detail)
        except (TimeoutError, TackerError, aiohttp.ClientError, KeyError, ValueError) as e:
            detail["error"] = f"{type(e).__name__}: {e}"[:500]
            return Outcome("info", state=detail.get("last_state"), detail=detail)

    # --- the workflow's steps ------------------------------------------------------------------------------

    def _instantiate_body(self) -> dict[str, Any]:
        return {"flavourId": csar_mod.FLAVOUR,
                "vimConnectionInfo": {VIM_ID: {
                    "vimId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.vim)),
                    "vimType": "ETSINFV.OPENSTACK_KEYSTONE.V_3",
                    "interfaceInfo": {"endpoint": f"{self.vim}/identity/v3"},
                    "accessInfo": {"username": "manobench", "password": "manobench", "project": "manobench",
                                   "projectDomain": "Default", "userDomain": "Default", "region": "RegionOne"}}}}

    async def _start_op(self, url: str, body: dict[str, Any], until: float | None = None,
                        detail: dict[str, Any] | None = None) -> str:
        """POST an LCM operation (202): the operation occurrence's id, from Location. A 409 'other operation
        in progress' (the instance's lock, still held for a moment after the previous operation's COMPLETED)
        is tried again until `until`, and counted in detail['busy']."""
        assert self.session is not None

        async def once() -> str:
            assert self.session is not None
            async with self.session.post(url, json=body, headers=V2) as r:
                text = await r.text()
                if r.status != 202:
                    raise TackerError(f"POST {url}: {r.status} {text[:300]}", r.status)
                location = r.headers.get("Location", "")
            if not location:
                raise TackerError(f"POST {url}: 202 without Location")
            return location.rstrip("/").rsplit("/", 1)[-1]

        if until is None or detail is None:
            return await once()
        return await self._while_busy(once, until, detail)

    async def _while_busy(self, call: Any, until: float, detail: dict[str, Any]) -> Any:
        """`call()` again every 0.1 s while Tacker answers 409 'other LCM operation ... is in progress'."""
        while True:
            try:
                return await call()
            except TackerError as e:
                if " 409 " not in str(e) or "in progress" not in str(e) or time.monotonic() >= until:
                    raise
                detail["busy"] = detail.get("busy", 0) + 1
                await asyncio.sleep(0.1)

    async def _follow(self, req: str, op: str, phase: str, until: float,
                      detail: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Poll the operation until an end state (COMPLETED, FAILED, ROLLED_BACK; FAILED_TEMP unless retried or
        settling) or `until`. Returns (the state, the occurrence last read)."""
        poll = float(self.opts.get("poll", 0.2))
        settle = float(self.opts.get("failed_temp_settle", 0.0))
        retries_left = int(self.opts.get("retries", 1)) if self.opts.get("retry", False) else 0
        url = f"{self.api}/vnflcm/v2/vnf_lcm_op_occs/{op}"
        occ: dict[str, Any] = {}
        seen: list[str] = []
        failed_temp_at: float | None = None
        while True:
            try:
                occ = await self._request("GET", url, None, (200,), V2)
                state = str(occ.get("operationState"))
            except (TimeoutError, TackerError, aiohttp.ClientError) as e:
                state = detail.get("last_state") or "UNKNOWN"
                detail.setdefault("poll_errors", 0)
                detail["poll_errors"] += 1
                detail["last_poll_error"] = f"{type(e).__name__}: {e}"[:200]
            detail["last_state"] = state
            if not seen or seen[-1] != state:
                seen.append(state)
                detail[f"{phase}_states"] = list(seen)
            if state == END_OK:
                return state, occ
            if state in ("FAILED", "ROLLED_BACK"):
                return state, occ
            if state == "FAILED_TEMP":
                if retries_left > 0:
                    retries_left -= 1
                    status = await self._retry(req, op, phase)
                    failed_temp_at = None
                    if status == 202:
                        await asyncio.sleep(poll)
                        continue
                failed_temp_at = failed_temp_at or time.monotonic()
                if time.monotonic() - failed_temp_at >= settle:
                    return state, occ
            else:
                failed_temp_at = None
            if time.monotonic() >= until:
                return state, occ
            await asyncio.sleep(min(poll, max(0.0, until - time.monotonic())))

    async def _retry(self, req: str, op: str, phase: str) -> int:
        """The operator's retry of a FAILED_TEMP operation: an explicit, recorded client action."""
        assert self.session is not None and self.setup is not None
        url = f"{self.api}/vnflcm/v2/vnf_lcm_op_occs/{op}/retry"
        try:
            async with self.session.post(url, headers=V2) as r:
                status = r.status
                await r.read()
        except (TimeoutError, aiohttp.ClientError) as e:
            status = -1
            self.setup.record("retry", req=req, op=op, phase=phase, status=status, error=str(e)[:200])
            return status
        self.setup.record("retry", req=req, op=op, phase=phase, status=status)
        return status

    def _ended(self, state: str, occ: dict[str, Any], detail: dict[str, Any]) -> Outcome:
        if occ.get("error"):
            detail["error"] = occ["error"]
        if state in END_FAIL:
            return Outcome("fail", state=state, detail=detail)
        return Outcome("info", state=state, detail=detail)

    # --- onboarding ----------------------------------------------------------------------------------------

    async def onboard(self) -> None:
        """One package for every workflow: built (or given), uploaded, ONBOARDED; recorded."""
        assert self.setup is not None
        t0 = time.monotonic()
        path = self.opts.get("csar")
        given: Path | None = None
        if path:
            given = Path(path) if Path(path).is_absolute() else Path(self.setup.base) / path
            if not self.opts.get("vnfd_id"):
                raise ValueError("tacker client: option csar needs vnfd_id beside it")
        timeout = float(self.opts.get("onboard_timeout", 60))
        attempts = int(self.opts.get("onboard_attempts", 5))
        stuck: list[str] = []
        for attempt in range(1, attempts + 1):
            # a new vnfdId each attempt: a failed attempt can leave its vnfdId taken (NOTES.md, behaviour 7)
            if given is not None:
                csar, vnfd_id = given, str(self.opts["vnfd_id"])
            else:
                csar, vnfd_id = csar_mod.build(Path(self.setup.workdir) / f"manobench-nop-{attempt}.zip",
                                               types=self.opts.get("sol001_dir"))
            data = Path(csar).read_bytes()
            pkg = await self._post(f"{self.api}/vnfpkgm/v1/vnf_packages", {}, (201,), headers={})
            pid = pkg["id"]
            await self._request("PUT", f"{self.api}/vnfpkgm/v1/vnf_packages/{pid}/package_content", data, (202,),
                                {"Content-Type": "application/zip"})
            give_up = float(self.opts.get("onboard_stuck_after", 8.0))  # a normal onboarding takes ~1 s
            state, info = await self._wait_onboarded(pid, min(timeout, give_up) if attempt < attempts else timeout)
            if state == "ONBOARDED" and await self._usable(info.get("vnfdId") or vnfd_id):
                self.package_id, self.vnfd_id = pid, info.get("vnfdId") or vnfd_id
                self.setup.record("onboarded", package=pid, vnfd=self.vnfd_id, attempts=attempt,
                                  stuck=stuck, seconds=round(time.monotonic() - t0, 3))
                return
            stuck.append(pid)
        raise TackerError(f"no package onboarded in {attempts} attempts (left {stuck} PROCESSING, CREATED or broken)")

    async def _usable(self, vnfd_id: str) -> bool:
        """Whether an ONBOARDED package can be used, `onboard_settle` s (default 1) after it said so: the other
        conductor's failed onboarding of the same upload can still remove the extracted files that the v2 API
        reads, and then every create answers 422 'not found or not operational' (NOTES.md, behaviour 7). Tried
        the way a workflow uses it: a VNF instance created (201) and deleted again."""
        await asyncio.sleep(float(self.opts.get("onboard_settle", 1.0)))
        try:
            inst = await self._post(f"{self.api}/vnflcm/v2/vnf_instances",
                                    {"vnfdId": vnfd_id, "vnfInstanceName": "manobench-onboarding-check"}, (201,))
        except TackerError:
            return False
        await self._request("DELETE", f"{self.api}/vnflcm/v2/vnf_instances/{inst['id']}", None, (204,), V2)
        return True

    async def _wait_onboarded(self, pid: str, timeout: float) -> tuple[str, dict[str, Any]]:
        until = time.monotonic() + timeout
        info: dict[str, Any] = {}
        processing = False
        while time.monotonic() < until:
            try:
                info = await self._request("GET", f"{self.api}/vnfpkgm/v1/vnf_packages/{pid}", None, (200,), {})
            except TackerError as e:
                if e.status is None or e.status < 500:
                    raise
                # the conductors' race left the package's rows half written (e.g. 500 VnfDeploymentFlavourNotFound,
                # NOTES.md behaviour 7): this upload is broken, the caller uploads a new one
                return f"BROKEN ({e.status})", {}
            state = info.get("onboardingState", "")
            if state == "ONBOARDED" or (processing and state == "CREATED"):  # CREATED again: reverted, failed
                return state, info
            processing = processing or state == "PROCESSING"
            await asyncio.sleep(0.2)
        return str(info.get("onboardingState")), info

    # --- HTTP ----------------------------------------------------------------------------------------------

    async def _post(self, url: str, body: Any, ok: tuple[int, ...], headers: dict[str, str] | None = None) -> Any:
        return await self._request("POST", url, body, ok, V2 if headers is None else headers)

    async def _request(self, method: str, url: str, body: Any, ok: tuple[int, ...],
                       headers: dict[str, str]) -> Any:
        assert self.session is not None
        kwargs: dict[str, Any] = {"headers": dict(headers)}
        if isinstance(body, (bytes, bytearray)):
            kwargs["data"] = bytes(body)
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, url, **kwargs) as r:
            text = await r.text()
            if r.status not in ok:
                raise TackerError(f"{method} {url}: {r.status} {text[:300]}", r.status)
            if not text:
                return {}
            try:
                return await r.json(content_type=None)
            except ValueError:
                return {}


async def vim_stats(vim: str) -> dict[str, Any]:
    """The VIM stub's call counts (a helper for smoke.py and the lead's instruments)."""
    async with aiohttp.ClientSession() as s, s.get(f"{_url(vim).rstrip('/')}/stub/stats") as r:
        return await r.json()


__all__ = ["TackerClient", "vim_stats"]
