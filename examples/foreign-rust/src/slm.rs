//! The SLM: k >= 2 instances, every one receives every request; the owner runs it, the others log it.
//!
//! Rank: the SLM ids, sorted (byte order). The owner of a request is the lowest-ranked *live* SLM as seen
//! when the request arrives here: this instance plus every peer SLM heard from and not declared dead. Each
//! SLM also draws a random UUID at start and sends it in its heartbeats: it ranks nothing, it tells a
//! restarted peer (same id, new UUID) from one that merely went on.
//!
//! Owner: for task i = 1..n, POST /task to worker m_i (retrying until a 200), then POST /state
//! {req, last_task: i, owner} to every live peer SLM, without waiting for it (a thread per share and peer:
//! on loopback it lands within a millisecond, while task i + 1 runs). At the end, POST /complete to the
//! BSS until a 2xx, then POST /done to the peers.
//!
//! Failure detection: a heartbeat every --hb-interval to every peer (one thread per peer, so a dead or
//! frozen peer delays nobody else's); a peer silent for longer than --hb-timeout is dead. The lowest-ranked
//! survivor then takes over every logged request the dead one owned, from the task after the last one it
//! was told of. A dead peer that speaks again rejoins the ranking; its old requests stay with their new owner.

use crate::http::{self, field_int, field_str, json_object, Client, Request, Response, Timeouts};
use crate::log;
use crate::spec::Spec;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub struct Config {
    pub workers: Vec<String>, // worker ids, m_1..m_n: task i goes to peers[workers[i-1]].op
    pub hb_interval: Duration,
    pub hb_timeout: Duration,
}

const RETRY_BACKOFF: Duration = Duration::from_millis(50);

struct PeerSlm {
    id: String,
    hb: String,
    state: Option<String>,
}

#[derive(Default)]
struct PeerView {
    last_seen: Option<Instant>,
    uuid: Option<String>,
    dead: bool,
}

struct LogEntry {
    owner: String,
    last_task: usize, // last task whose state the owner shared with us (0: none)
}

#[derive(Default)]
struct State {
    peers: BTreeMap<String, PeerView>,
    log: HashMap<String, LogEntry>, // requests a peer drives, kept to take them over
    running: HashSet<String>,      // requests driven here
    finished: HashSet<String>,     // completed here, or a peer said 'done'
}

struct Slm {
    id: String,
    uuid: String,
    cfg: Config,
    n: usize,
    task_addrs: Vec<String>,
    peers: Vec<PeerSlm>,
    bss: Option<String>,
    secret: Option<String>,
    st: Mutex<State>,
    op: Client,    // task calls and completion notices
    state: Client, // state shares and 'done'
}

pub fn run(spec: Spec, cfg: Config) -> Result<(), String> {
    let mut task_addrs = Vec::new();
    for w in &cfg.workers {
        let addr = spec.peers.get(w).and_then(|p| p.get("op")).ok_or_else(|| format!("--workers: MANOBENCH_SPEC has no peers.{w}.op"))?;
        task_addrs.push(addr.clone());
    }
    let peers: Vec<PeerSlm> = spec
        .peers
        .iter()
        .filter_map(|(pid, planes)| {
            planes.get("hb").map(|hb| PeerSlm { id: pid.clone(), hb: hb.clone(), state: planes.get("state").cloned() })
        })
        .collect();
    if spec.bss.is_none() {
        log(&spec.id, "warning: no 'bss' in MANOBENCH_SPEC: completion notices cannot be sent");
    }
    let mut st = State::default();
    for p in &peers {
        st.peers.insert(p.id.clone(), PeerView::default());
    }
    let slm = Arc::new(Slm {
        id: spec.id.clone(),
        uuid: new_uuid(),
        n: cfg.workers.len(),
        cfg,
        task_addrs,
        peers,
        bss: spec.bss.clone(),
        secret: spec.secret.clone(),
        st: Mutex::new(st),
        op: Client::new(),
        state: Client::new(),
    });
    for (plane, port) in &spec.ports {
        let (plane, me) = (plane.clone(), slm.clone());
        let handler: http::Handler = Arc::new(move |req: &Request| me.handle(&plane, req));
        http::serve(&spec.bind, *port, handler).map_err(|e| format!("cannot listen on {}:{port}: {e}", spec.bind))?;
    }
    for i in 0..slm.peers.len() {
        let me = slm.clone();
        spawn("hb", move || me.heartbeat_loop(i));
    }
    let me = slm.clone();
    spawn("monitor", move || me.monitor_loop());
    log(
        &slm.id,
        &format!(
            "slm listening on {} {:?}, uuid {}, peers {:?}, workers {:?}, hb every {:.3} s, dead after {:.3} s",
            spec.bind,
            spec.ports,
            slm.uuid,
            slm.peers.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            slm.cfg.workers,
            slm.cfg.hb_interval.as_secs_f64(),
            slm.cfg.hb_timeout.as_secs_f64()
        ),
    );
    Ok(())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = thread::Builder::new().name(name.into()).stack_size(512 * 1024).spawn(f) {
        eprintln!("foreign-mano: cannot start a thread: {e}"); // keep serving: the caller's work is retried or logged
    }
}

fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        let t = crate::monotonic().to_bits() ^ (std::process::id() as u64).rotate_left(32);
        b[..8].copy_from_slice(&t.to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

impl Slm {
    // --- ranking --------------------------------------------------------------------------------------
    /// The lowest id among this instance and the peers heard from and not dead.
    fn owner_now(&self, st: &State) -> String {
        let mut owner = self.id.clone();
        for (pid, view) in &st.peers {
            if view.last_seen.is_some() && !view.dead && *pid < owner {
                owner = pid.clone();
            }
        }
        owner
    }

    fn short_timeouts(&self) -> Timeouts {
        // heartbeats and state calls: a dead or frozen peer costs at most hb_timeout, after which it is dead
        let t = self.cfg.hb_timeout.max(Duration::from_millis(50));
        Timeouts { connect: t, io: t }
    }

    // --- the planes -----------------------------------------------------------------------------------
    fn handle(self: &Arc<Self>, plane: &str, req: &Request) -> Response {
        let route = (plane, req.method.as_str(), req.path.as_str());
        let result = match route {
            ("op", "GET", "/health") => Ok(self.health()),
            ("op", "POST", "/request") => self.handle_request(req),
            ("hb", "POST", "/hb") => self.handle_hb(req),
            ("state", "POST", "/state") => self.handle_state(req),
            ("state", "POST", "/done") => self.handle_done(req),
            _ => Err(Response::error(404, "no such route")),
        };
        result.unwrap_or_else(|r| r)
    }

    fn health(&self) -> Response {
        let st = self.st.lock().unwrap();
        let missing: Vec<&String> = st.peers.iter().filter(|(_, v)| v.last_seen.is_none()).map(|(k, _)| k).collect();
        let body = json!({"ready": missing.is_empty(), "id": self.id, "uuid": self.uuid, "waiting_for": missing});
        Response::json(if missing.is_empty() { 200 } else { 503 }, body)
    }

    fn handle_request(self: &Arc<Self>, req: &Request) -> Result<Response, Response> {
        let body = json_object(req)?;
        let r = field_str(&body, "req")?;
        let mut st = self.st.lock().unwrap();
        if st.finished.contains(&r) || st.running.contains(&r) || st.log.contains_key(&r) {
            return Ok(Response::json(200, json!({"accepted": false, "reason": "known"})));
        }
        let owner = self.owner_now(&st);
        if owner == self.id {
            st.running.insert(r.clone());
            drop(st);
            self.start_workflow(r, 1);
        } else {
            st.log.insert(r, LogEntry { owner: owner.clone(), last_task: 0 });
        }
        Ok(Response::json(202, json!({"accepted": true, "owner": owner})))
    }

    fn handle_hb(self: &Arc<Self>, req: &Request) -> Result<Response, Response> {
        let body = json_object(req)?;
        let (pid, uuid) = (field_str(&body, "id")?, field_str(&body, "uuid")?);
        let mut st = self.st.lock().unwrap();
        let Some(view) = st.peers.get_mut(&pid) else {
            return Err(Response::error(400, &format!("'{pid}' is not a peer SLM of {}", self.id)));
        };
        let restarted = matches!(&view.uuid, Some(old) if *old != uuid) && !view.dead;
        let was_dead = view.dead;
        view.last_seen = Some(Instant::now());
        view.uuid = Some(uuid);
        if restarted {
            // same id, new UUID, never declared dead: it restarted faster than hb_timeout and lost what it
            // drove. Its requests are taken over as after a death, then it rejoins.
            view.dead = true;
            log(&self.id, &format!("peer_restarted peer={pid}"));
            self.on_dead(&mut st, &pid);
            st.peers.get_mut(&pid).unwrap().dead = false;
        } else if was_dead {
            view.dead = false;
            log(&self.id, &format!("peer_rejoined peer={pid}"));
        }
        Ok(Response::json(200, json!({"ok": true, "id": self.id, "uuid": self.uuid})))
    }

    fn handle_state(&self, req: &Request) -> Result<Response, Response> {
        let body = json_object(req)?;
        let r = field_str(&body, "req")?;
        let owner = field_str(&body, "owner")?;
        let task = field_int(&body, "last_task")?;
        if task < 1 || task as usize > self.n {
            return Err(Response::error(400, &format!("last_task {task} outside 1..{}", self.n)));
        }
        let mut st = self.st.lock().unwrap();
        if st.running.contains(&r) || st.finished.contains(&r) {
            return Ok(Response::json(200, json!({"ok": false, "reason": "stale"})));
        }
        let entry = st.log.entry(r).or_insert(LogEntry { owner: owner.clone(), last_task: 0 });
        entry.owner = owner;
        entry.last_task = entry.last_task.max(task as usize);
        Ok(Response::json(200, json!({"ok": true})))
    }

    fn handle_done(&self, req: &Request) -> Result<Response, Response> {
        let body = json_object(req)?;
        let r = field_str(&body, "req")?;
        let mut st = self.st.lock().unwrap();
        st.log.remove(&r);
        st.finished.insert(r);
        Ok(Response::json(200, json!({"ok": true})))
    }

    // --- the workflow ----------------------------------------------------------------------------------
    fn start_workflow(self: &Arc<Self>, r: String, first_task: usize) {
        let me = self.clone();
        spawn("workflow", move || me.workflow(&r, first_task));
    }

    fn workflow(self: &Arc<Self>, r: &str, first_task: usize) {
        for i in first_task..=self.n {
            self.call_task(r, i);
            self.share_state(r, i);
        }
        let delivered = self.complete(r);
        {
            let mut st = self.st.lock().unwrap();
            st.running.remove(r);
            st.finished.insert(r.to_string());
        }
        if delivered {
            self.send_done(r);
        }
    }

    /// Task i at worker m_i, retried until it answers 200: a workflow is never dropped.
    fn call_task(&self, r: &str, i: usize) {
        let addr = &self.task_addrs[i - 1];
        // a task takes as long as the worker's step: no short timeout here (10 min guards a lost answer)
        let t = Timeouts { connect: Duration::from_secs(2), io: Duration::from_secs(600) };
        let mut attempt = 0u64;
        loop {
            let outcome = match self.op.post(addr, "/task", &json!({"req": r, "task": i}), &[], t) {
                Ok(reply) if reply.status == 200 => return,
                Ok(reply) => format!("status {}", reply.status),
                Err(e) => e,
            };
            if attempt % 20 == 0 {
                log(&self.id, &format!("task_call_failed req={r} task={i} worker={addr} attempt={attempt} error={outcome:?}"));
            }
            attempt += 1;
            thread::sleep(RETRY_BACKOFF);
        }
    }

    /// The state after task i to every live peer, without waiting: one short-lived thread per peer, so
    /// neither the workflow nor the other peers wait for a slow or frozen one (at most hb_timeout each,
    /// after which that peer is dead and gets no more shares). Order between shares does not matter: a
    /// peer keeps the highest last_task, and ignores shares of a request it knows finished.
    fn share_state(self: &Arc<Self>, r: &str, i: usize) {
        let body = json!({"req": r, "last_task": i, "owner": self.id});
        for idx in self.live_peer_indices() {
            let (me, body, r) = (self.clone(), body.clone(), r.to_string());
            spawn("share", move || {
                let p = &me.peers[idx];
                if let Some(addr) = &p.state {
                    if let Err(e) = me.state.post(addr, "/state", &body, &[], me.short_timeouts()) {
                        log(&me.id, &format!("state_share_failed req={r} task={i} peer={} error={e:?}", p.id));
                    }
                }
            });
        }
    }

    /// The peer SLMs not declared dead (never heard of included: they may just be starting).
    fn live_peer_indices(&self) -> Vec<usize> {
        let st = self.st.lock().unwrap();
        (0..self.peers.len()).filter(|&i| !st.peers.get(&self.peers[i].id).map(|v| v.dead).unwrap_or(false)).collect()
    }

    /// The completion notice, until the BSS answers 2xx. False if it refused it for good (4xx).
    fn complete(&self, r: &str) -> bool {
        let Some(bss) = &self.bss else {
            log(&self.id, &format!("completion_undeliverable req={r} error=\"no bss in the spec\""));
            return false;
        };
        let body = json!({"req": r, "by": self.id});
        let headers: Vec<(&str, &str)> = self.secret.iter().map(|s| ("X-Manobench-Secret", s.as_str())).collect();
        let t = Timeouts { connect: Duration::from_secs(2), io: Duration::from_secs(10) };
        let mut attempt = 0u64;
        loop {
            let outcome = match self.op.post(bss, "/complete", &body, &headers, t) {
                Ok(reply) if (200..300).contains(&reply.status) => return true,
                Ok(reply) if reply.status == 403 => {
                    log(&self.id, &format!("completion_refused req={r} status=403 (wrong key: not retried)"));
                    return false;
                }
                Ok(reply) if (400..500).contains(&reply.status) && reply.status != 408 && reply.status != 429 => {
                    let text = String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned();
                    log(&self.id, &format!("completion_refused req={r} status={} body={text:?} (not retried)", reply.status));
                    return false;
                }
                Ok(reply) => format!("status {}", reply.status),
                Err(e) => e,
            };
            if attempt % 20 == 0 {
                log(&self.id, &format!("completion_retry req={r} attempt={attempt} error={outcome:?}"));
            }
            attempt += 1;
            thread::sleep(RETRY_BACKOFF);
        }
    }

    fn send_done(&self, r: &str) {
        let body = json!({"req": r, "by": self.id});
        for idx in self.live_peer_indices() {
            let p = &self.peers[idx];
            if let Some(addr) = &p.state {
                if let Err(e) = self.state.post(addr, "/done", &body, &[], self.short_timeouts()) {
                    log(&self.id, &format!("done_failed req={r} peer={} error={e:?}", p.id));
                }
            }
        }
    }

    // --- heartbeats and failure detection ---------------------------------------------------------------
    /// Heartbeats to peer `idx`, every hb_interval on a fixed schedule, on this thread alone.
    fn heartbeat_loop(&self, idx: usize) {
        let peer = &self.peers[idx];
        let client = Client::new(); // one keep-alive connection to this peer's hb plane
        let mut seq: u64 = 0;
        let mut next = Instant::now();
        let mut failing = false;
        loop {
            seq += 1;
            let body = json!({"id": self.id, "uuid": self.uuid, "seq": seq});
            match client.post(&peer.hb, "/hb", &body, &[], self.short_timeouts()) {
                Ok(_) => failing = false,
                Err(e) => {
                    if !failing {
                        log(&self.id, &format!("hb_failed peer={} error={e:?}", peer.id));
                    }
                    failing = true;
                }
            }
            next += self.cfg.hb_interval;
            let now = Instant::now();
            if next <= now {
                next = now; // late (a slow peer): send the next one at once, keep the period from here
            } else {
                thread::sleep(next - now);
            }
        }
    }

    /// Declares a peer dead the moment hb_timeout has passed since it was last heard from.
    ///
    /// If this thread itself woke far later than planned, this instance was paused (SIGSTOP, a frozen
    /// container) or starved: the peers' heartbeats of that time sit unread in its sockets, and declaring
    /// them dead would be its own failure, not theirs. It then gives the heartbeat handlers a grace of
    /// `GRACE` to read them before it judges.
    fn monitor_loop(self: &Arc<Self>) {
        const GRACE: Duration = Duration::from_millis(20);
        let late_after = self.cfg.hb_interval.max(GRACE);
        let mut planned = Instant::now();
        loop {
            let now = Instant::now();
            if now > planned + late_after {
                log(&self.id, &format!("monitor_late by={:.4} (paused?): {} ms of grace before judging peers",
                                       (now - planned).as_secs_f64(), GRACE.as_millis()));
                planned = now + GRACE;
                thread::sleep(GRACE);
                continue;
            }
            let mut earliest: Option<Instant> = None;
            {
                let mut st = self.st.lock().unwrap();
                let mut newly_dead = Vec::new();
                for (pid, view) in st.peers.iter_mut() {
                    let Some(seen) = view.last_seen else { continue };
                    if view.dead {
                        continue;
                    }
                    let deadline = seen + self.cfg.hb_timeout;
                    if now > deadline {
                        view.dead = true;
                        log(&self.id, &format!("peer_dead peer={pid} silent_for={:.4}", (now - seen).as_secs_f64()));
                        newly_dead.push(pid.clone());
                    } else {
                        earliest = Some(earliest.map_or(deadline, |e: Instant| e.min(deadline)));
                    }
                }
                for pid in newly_dead {
                    self.on_dead(&mut st, &pid);
                }
            }
            let cap = self.cfg.hb_interval.min(Duration::from_millis(50));
            let wait = match earliest {
                Some(d) => (d.saturating_duration_since(Instant::now()) + Duration::from_micros(500)).min(cap),
                None => cap,
            };
            planned = Instant::now() + wait;
            thread::sleep(wait);
        }
    }

    /// Re-rank without `dead` and take over its unfinished requests that now fall to this instance.
    fn on_dead(self: &Arc<Self>, st: &mut State, dead: &str) {
        let owner = self.owner_now(st);
        let mine: Vec<String> = st.log.iter().filter(|(_, e)| e.owner == dead).map(|(r, _)| r.clone()).collect();
        for r in mine {
            if owner != self.id {
                st.log.get_mut(&r).unwrap().owner = owner.clone();
                continue;
            }
            let entry = st.log.remove(&r).unwrap();
            let from = entry.last_task + 1;
            log(&self.id, &format!("takeover req={r} dead={dead} from_task={from} last_shared={}", entry.last_task));
            st.running.insert(r.clone());
            self.start_workflow(r, from);
        }
    }
}
