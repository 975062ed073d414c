"""A VIM stub for Tacker's v2 OpenStack infra driver: just enough Keystone v3 (version document, password
token with a service catalog) and Heat (stack create, show, resources, template, files, delete) for a one-VDU
VNF to be instantiated and terminated with an instant stack, plus an empty Glance image list (Tacker's local
NFVO lists a terminated VNF's images).

It is where the infrastructure goes in a benchmark of the control plane: every call can be slowed (a latency
per kind of call) or answered 503 (an error rate per kind), and every call is counted. Settings come from the
command line and can be changed while it runs: `POST /stub/config` with a JSON object of the same keys
(`latency`, `error_rate`, `stack_seconds`, `seed`), `GET /stub/stats` for the counts, which it also prints as
one line `vimstub: stats {...}` when it stops on SIGTERM or SIGINT (the run folder's logs/vim.log).

Kinds of call: token, discovery, stack_create, stack_get, stack_update, stack_delete, resources, template,
files, image, other. `latency` and `error_rate` are either a number (every kind) or an object
{kind: number, "*": default}.

Only aiohttp and the standard library (PyYAML when present, to read a HOT template sent as YAML text).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from typing import Any

from aiohttp import web

try:
    import yaml
except ImportError:  # the template arrives as YAML text; without PyYAML only JSON templates are understood
    yaml = None  # type: ignore[assignment]

KINDS = ("token", "discovery", "stack_create", "stack_get", "stack_update", "stack_delete", "resources",
         "template", "files", "image", "other")
PROJECT_ID = "5f2b8d8e0d8a4c51a3a8f0a1c0de0001"  # the stub's only project
USER_ID = "5f2b8d8e0d8a4c51a3a8f0a1c0de0002"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _per_kind(value: Any, kind: str) -> float:
    if isinstance(value, dict):
        return float(value.get(kind, value.get("*", 0.0)) or 0.0)
    return float(value or 0.0)


class VimStub:
    """The stub's state: settings, counts, and the stacks it holds."""

    def __init__(self, latency: Any = 0.0, error_rate: Any = 0.0, stack_seconds: float = 0.0,
                 seed: int | None = None) -> None:
        self.latency, self.error_rate, self.stack_seconds = latency, error_rate, float(stack_seconds)
        self.rng = random.Random(seed)
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.stacks: dict[str, dict[str, Any]] = {}  # id -> stack
        self.names: dict[str, str] = {}  # name -> id of the live stack of that name
        self.public = ""  # http://host:port as the clients reach it, set at start

    # --- settings, counts ----------------------------------------------------------------------------------

    def configure(self, cfg: dict[str, Any]) -> None:
        if "latency" in cfg:
            self.latency = cfg["latency"]
        if "error_rate" in cfg:
            self.error_rate = cfg["error_rate"]
        if "stack_seconds" in cfg:
            self.stack_seconds = float(cfg["stack_seconds"])
        if cfg.get("seed") is not None:
            self.rng.seed(cfg["seed"])

    def stats(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "errors": dict(self.errors), "total": sum(self.calls.values()),
                "stacks": {s["id"]: {"name": s["name"], "status": self._status(s)} for s in self.stacks.values()},
                "settings": {"latency": self.latency, "error_rate": self.error_rate,
                             "stack_seconds": self.stack_seconds}}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        kind = _kind(request)
        if kind is None:  # the stub's own routes: neither slowed nor counted
            return await handler(request)
        self.calls[kind] += 1
        delay = _per_kind(self.latency, kind)
        if delay > 0:
            await asyncio.sleep(delay)
        if self.rng.random() < _per_kind(self.error_rate, kind):
            self.errors[kind] += 1
            return web.json_response({"error": {"code": 503, "title": "Service Unavailable",
                                                 "message": f"vimstub: injected error ({kind})"}}, status=503)
        return await handler(request)

    # --- keystone ------------------------------------------------------------------------------------------

    def _version_v3(self) -> dict[str, Any]:
        return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                "links": [{"rel": "self", "href": f"{self.public}/identity/v3/"}],
                "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]}

    async def identity_root(self, _request: web.Request) -> web.Response:
        return web.json_response({"versions": {"values": [self._version_v3()]}}, status=300)

    async def identity_v3(self, _request: web.Request) -> web.Response:
        return web.json_response({"version": self._version_v3()})

    def _catalog(self) -> list[dict[str, Any]]:
        def service(kind: str, name: str, url: str) -> dict[str, Any]:
            return {"type": kind, "name": name, "id": uuid.uuid5(uuid.NAMESPACE_URL, kind).hex,
                    "endpoints": [{"id": uuid.uuid5(uuid.NAMESPACE_URL, kind + i).hex, "interface": i,
                                   "region": "RegionOne", "region_id": "RegionOne", "url": url}
                                  for i in ("public", "internal", "admin")]}
        return [service("identity", "keystone", f"{self.public}/identity/v3"),
                service("orchestration", "heat", f"{self.public}/heat/v1/{PROJECT_ID}"),
                service("image", "glance", f"{self.public}/image")]

    async def token(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            scope = body["auth"].get("scope") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            return web.json_response({"error": {"code": 400, "message": "malformed auth request"}}, status=400)
        project_name = ((scope.get("project") or {}).get("name")) if isinstance(scope, dict) else None
        token = {"methods": ["password"], "issued_at": _now(), "expires_at": "2999-01-01T00:00:00.000000Z",
                 "user": {"id": USER_ID, "name": "manobench", "domain": {"id": "default", "name": "Default"},
                          "password_expires_at": None},
                 "roles": [{"id": "r-admin", "name": "admin"}, {"id": "r-member", "name": "member"}],
                 "audit_ids": [uuid.uuid4().hex[:22]]}
        if project_name:
            token["project"] = {"id": PROJECT_ID, "name": project_name,
                                "domain": {"id": "default", "name": "Default"}}
            token["catalog"] = self._catalog()
        return web.json_response({"token": token}, status=201, headers={"X-Subject-Token": uuid.uuid4().hex})

    # --- heat ----------------------------------------------------------------------------------------------

    def _status(self, stack: dict[str, Any]) -> str:
        if stack["deleted"]:
            return "DELETE_COMPLETE"
        if stack["action"] in ("CREATE", "UPDATE"):
            done = time.monotonic() >= stack["ready_at"]
            return f"{stack['action']}_{'COMPLETE' if done else 'IN_PROGRESS'}"
        return "CREATE_COMPLETE"

    def _find(self, name_or_id: str, sid: str | None = None) -> dict[str, Any] | None:
        if sid is not None:
            stack = self.stacks.get(sid)
            return stack if stack is not None and stack["name"] == name_or_id else None
        if name_or_id in self.names:
            return self.stacks[self.names[name_or_id]]
        stack = self.stacks.get(name_or_id)
        return stack if stack is not None and not stack["deleted"] else None

    def _href(self, stack: dict[str, Any]) -> str:
        return f"{self.public}/heat/v1/{PROJECT_ID}/stacks/{stack['name']}/{stack['id']}"

    def _show(self, stack: dict[str, Any]) -> dict[str, Any]:
        params = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in stack["parameters"].items()}
        params.update({"OS::stack_id": stack["id"], "OS::stack_name": stack["name"], "OS::project_id": PROJECT_ID})
        status = self._status(stack)
        return {"stack": {"id": stack["id"], "stack_name": stack["name"], "stack_status": status,
                          "stack_status_reason": f"Stack {status.split('_')[0]} completed successfully",
                          "creation_time": stack["created"], "updated_time": stack.get("updated"),
                          "deletion_time": stack.get("deleted_at"), "parameters": params, "outputs": [],
                          "disable_rollback": stack["disable_rollback"], "timeout_mins": stack["timeout_mins"],
                          "parent": None, "tags": None,
                          "links": [{"href": self._href(stack), "rel": "self"}]}}

    async def stack_create(self, request: web.Request) -> web.Response:
        try:
            fields = await request.json()
            name = fields["stack_name"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": {"code": 400, "message": "malformed stack create"}}, status=400)
        if name in self.names:
            return web.json_response({"error": {"code": 409, "message": f"stack {name} exists"}}, status=409)
        template = _load(fields.get("template"))
        sid = str(uuid.uuid4())
        stack = {"id": sid, "name": name, "template": template, "files": fields.get("files") or {},
                 "parameters": fields.get("parameters") or {}, "created": _now(), "deleted": False,
                 "action": "CREATE", "ready_at": time.monotonic() + self.stack_seconds,
                 "disable_rollback": fields.get("disable_rollback", True), "timeout_mins": fields.get("timeout_mins"),
                 "resources": _resources(template, self._href, name, sid)}
        self.stacks[sid], self.names[name] = stack, sid
        return web.json_response({"stack": {"id": sid, "links": [{"href": self._href(stack), "rel": "self"}]}},
                                 status=201)

    async def stack_get(self, request: web.Request) -> web.Response:
        stack = self._find(request.match_info["name"], request.match_info.get("sid"))
        if stack is None:
            return _not_found("stack", request.match_info["name"])
        return web.json_response(self._show(stack))

    async def stack_update(self, request: web.Request) -> web.Response:
        stack = self._find(request.match_info["name"], request.match_info.get("sid"))
        if stack is None or stack["deleted"]:
            return _not_found("stack", request.match_info["name"])
        fields = await request.json()
        if "template" in fields:
            stack["template"] = _load(fields["template"])
            stack["resources"] = _resources(stack["template"], self._href, stack["name"], stack["id"])
        if "parameters" in fields:
            stack["parameters"].update(fields["parameters"] or {})
        stack.update(action="UPDATE", ready_at=time.monotonic() + self.stack_seconds, updated=_now())
        return web.Response(status=202)

    async def stack_delete(self, request: web.Request) -> web.Response:
        stack = self._find(request.match_info["name"], request.match_info.get("sid"))
        if stack is None or stack["deleted"]:
            return _not_found("stack", request.match_info["name"])
        stack.update(deleted=True, deleted_at=_now())  # instant: a stack deletes in no time here
        self.names.pop(stack["name"], None)
        return web.Response(status=204)

    async def resources(self, request: web.Request) -> web.Response:
        stack = self._find(request.match_info["name"], request.match_info.get("sid"))
        if stack is None:
            return _not_found("stack", request.match_info["name"])
        return web.json_response({"resources": stack["resources"]})

    async def template(self, request: web.Request) -> web.Response:
        stack = self._find(request.match_info["name"], request.match_info.get("sid"))
        if stack is None:
            return _not_found("stack", request.match_info["name"])
        return web.json_response(stack["template"])

    async def files(self, request: web.Request) -> web.Response:
        stack = self._find(request.match_info["name"], request.match_info.get("sid"))
        if stack is None:
            return _not_found("stack", request.match_info["name"])
        return web.json_response(stack["files"])

    # --- glance (Tacker's local NFVO lists a terminated VNF's images) ---------------------------------------

    async def image_versions(self, _request: web.Request) -> web.Response:
        return web.json_response({"versions": [{"id": "v2.9", "status": "CURRENT",
                                                "links": [{"rel": "self", "href": f"{self.public}/image/v2/"}]}]})

    async def images(self, _request: web.Request) -> web.Response:
        return web.json_response({"images": [], "first": "/v2/images", "schema": "/v2/schemas/images"})

    # --- the stub's own routes -----------------------------------------------------------------------------

    async def get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def post_config(self, request: web.Request) -> web.Response:
        try:
            cfg = await request.json()
            if not isinstance(cfg, dict):
                raise ValueError("not an object")
            self.configure(cfg)
        except (ValueError, TypeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(self.stats()["settings"])

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=64 * 1024 * 1024)
        stack = "/heat/v1/{project}/stacks"
        app.add_routes([
            web.get("/health", self.health), web.get("/stub/stats", self.get_stats),
            web.post("/stub/config", self.post_config),
            web.get("/identity", self.identity_root), web.get("/identity/", self.identity_root),
            web.get("/identity/v3", self.identity_v3), web.get("/identity/v3/", self.identity_v3),
            web.post("/identity/v3/auth/tokens", self.token),
            web.post(stack, self.stack_create),
            web.get(stack + "/{name}", self.stack_get), web.get(stack + "/{name}/{sid}", self.stack_get),
            web.patch(stack + "/{name}/{sid}", self.stack_update), web.put(stack + "/{name}/{sid}", self.stack_update),
            web.patch(stack + "/{name}", self.stack_update), web.put(stack + "/{name}", self.stack_update),
            web.delete(stack + "/{name}", self.stack_delete), web.delete(stack + "/{name}/{sid}", self.stack_delete),
            web.get(stack + "/{name}/{sid}/resources", self.resources),
            web.get(stack + "/{name}/{sid}/template", self.template),
            web.get(stack + "/{name}/template", self.template),
            web.get(stack + "/{name}/{sid}/files", self.files), web.get(stack + "/{name}/files", self.files),
            web.get("/image", self.image_versions), web.get("/image/", self.image_versions),
            web.get("/image/v2/images", self.images),
        ])
        return app


def _kind(request: web.Request) -> str | None:
    path, method = request.path, request.method
    if path.startswith(("/stub/", "/health")):
        return None
    if path.startswith("/identity"):
        return "token" if path.endswith("/auth/tokens") else "discovery"
    if path.startswith("/image"):
        return "image"
    if path.startswith("/heat/"):
        tail = path.split("/stacks", 1)[1] if "/stacks" in path else ""
        if method == "POST" and tail in ("", "/"):
            return "stack_create"
        if method == "DELETE":
            return "stack_delete"
        if method in ("PATCH", "PUT"):
            return "stack_update"
        for kind in ("resources", "template", "files"):
            if tail.rstrip("/").endswith("/" + kind):
                return kind
        return "stack_get"
    return "other"


def _not_found(what: str, name: str) -> web.Response:
    return web.json_response({"error": {"code": 404, "title": "Not Found", "message": f"{what} {name} not found"},
                              "explanation": "The resource could not be found.", "code": 404}, status=404)


def _load(template: Any) -> dict[str, Any]:
    if isinstance(template, dict):
        return template
    if isinstance(template, str):
        try:
            return json.loads(template)
        except ValueError:
            if yaml is not None:
                loaded = yaml.safe_load(template)
                return loaded if isinstance(loaded, dict) else {}
    return {}


def _resources(template: dict[str, Any], href: Any, name: str, sid: str) -> list[dict[str, Any]]:
    """Every resource of the top template, as Heat's `resources?nested_depth=2` lists them."""
    stack = {"name": name, "id": sid}
    out = []
    for rname, res in (template.get("resources") or {}).items():
        rtype = res.get("type", "OS::Heat::None") if isinstance(res, dict) else "OS::Heat::None"
        out.append({"resource_name": rname, "resource_type": rtype, "logical_resource_id": rname,
                    "physical_resource_id": str(uuid.uuid4()), "resource_status": "CREATE_COMPLETE",
                    "resource_status_reason": "state changed", "creation_time": _now(), "updated_time": _now(),
                    "required_by": [],
                    "links": [{"href": f"{href(stack)}/resources/{rname}", "rel": "self"},
                              {"href": href(stack), "rel": "stack"}]})
    return out


async def serve(stub: VimStub, host: str, port: int, public: str | None = None,
                ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set or the task is cancelled."""
    stub.public = public or f"http://{host}:{port}"
    runner = web.AppRunner(stub.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    if ready is not None:
        ready.set()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()


async def _serve_until_signal(stub: VimStub, host: str, port: int, public: str | None) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(stub, host, port, public, stop=stop)
    # the counts outlive the stub in its log: a run's folder says how many VIM calls its workflows made
    print(f"vimstub: stats {json.dumps(stub.stats(), sort_keys=True)}", flush=True)


def _json_arg(text: str | None) -> Any:
    if text is None:
        return 0.0
    try:
        return json.loads(text)
    except ValueError:
        return float(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: MANOBENCH_SPEC's ports.vim")
    p.add_argument("--public", help="base URL the clients use (default http://bind:port)")
    p.add_argument("--latency", help="seconds per call, or JSON {kind: seconds, '*': default}")
    p.add_argument("--error-rate", help="fraction of calls answered 503, or JSON {kind: rate}")
    p.add_argument("--stack-seconds", type=float, default=0.0, help="how long a stack create/update takes")
    p.add_argument("--seed", type=int)
    args = p.parse_args(argv)
    bind, port = args.bind, args.port
    spec = os.environ.get("MANOBENCH_SPEC")
    if spec and not port:
        s = json.loads(spec)
        bind, port = s.get("bind", bind), int(s["ports"]["vim"])
    if not port:
        sys.exit("vimstub: no port (--port or MANOBENCH_SPEC ports.vim)")
    stub = VimStub(_json_arg(args.latency), _json_arg(args.error_rate), args.stack_seconds, args.seed)
    print(f"vimstub: listening on {bind}:{port}", flush=True)
    asyncio.run(_serve_until_signal(stub, bind, port, args.public))


if __name__ == "__main__":
    main()
