//! foreign-mano: the paper's centralised design (k SLMs that all receive every request, workers m_1..m_n)
//! written outside the harness, in Rust, against manobench's target contract only (docs/targets.md).
//!
//!     foreign-mano slm --workers m1,m2,m3 --hb-interval 0.1 --hb-timeout 0.5
//!     foreign-mano worker --step 0.1
//!
//! Its configuration is its command line; the only thing the harness gives it is MANOBENCH_SPEC (the
//! addresses: bind, ports, peers, bss, and the instance's secret). It emits no events: it is measured from
//! outside. See README.md for what it does and the formulas of its timing.

mod http;
mod slm;
mod spec;
mod worker;

use std::process::exit;
use std::time::Duration;

pub const USAGE: &str = "usage: foreign-mano slm --workers ID[,ID...] --hb-interval SECONDS --hb-timeout SECONDS\n       \
                         foreign-mano worker --step SECONDS\n\
                         (addresses come from the environment variable MANOBENCH_SPEC, JSON)";

// --- a few libc calls, declared by hand (std links libc already; no extra crate) -------------------------
extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn _exit(status: i32) -> !;
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;
const CLOCK_MONOTONIC: i32 = 1;

extern "C" fn on_signal(_: i32) {
    // only async-signal-safe calls here: write(2) and _exit(2)
    let msg = b"foreign-mano: stopping (signal)\n";
    unsafe {
        write(2, msg.as_ptr(), msg.len());
        _exit(0);
    }
}

/// CLOCK_MONOTONIC seconds, the clock Python's time.monotonic() reads: log lines carry it, so a tool on
/// the same host can place them on its own time line.
pub fn monotonic() -> f64 {
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// One line on stderr: "<monotonic seconds> <instance id> <text>".
pub fn log(id: &str, text: &str) {
    eprintln!("{:.6} {id} {text}", monotonic());
}

fn fail(text: &str) -> ! {
    eprintln!("foreign-mano: {text}\n{USAGE}");
    exit(2)
}

fn seconds(value: Option<&String>, flag: &str) -> Duration {
    let v = value.unwrap_or_else(|| fail(&format!("{flag} needs a value")));
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s),
        _ => fail(&format!("{flag}: not a duration in seconds: {v:?}")),
    }
}

fn main() {
    unsafe {
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().map(String::as_str).unwrap_or("");
    let mut workers: Option<Vec<String>> = None;
    let (mut hb_interval, mut hb_timeout, mut step) = (None, None, None);
    let mut i = 1;
    while i < args.len() {
        let flag = args[i].as_str();
        let value = args.get(i + 1);
        match (role, flag) {
            ("slm", "--workers") => {
                let list = value.unwrap_or_else(|| fail("--workers needs a value"));
                let ids: Vec<String> = list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                if ids.is_empty() {
                    fail("--workers: at least one worker id");
                }
                workers = Some(ids);
            }
            ("slm", "--hb-interval") => hb_interval = Some(seconds(value, flag)),
            ("slm", "--hb-timeout") => hb_timeout = Some(seconds(value, flag)),
            ("worker", "--step") => step = Some(seconds(value, flag)),
            (_, "-h") | (_, "--help") => {
                println!("{USAGE}");
                exit(0)
            }
            _ => fail(&format!("unknown argument {flag:?} for role {role:?}")),
        }
        i += 2;
    }
    let spec = match spec::Spec::from_env() {
        Ok(s) => s,
        Err(e) => fail(&e),
    };
    if spec.role != role {
        log(&spec.id, &format!("note: started as {role:?} but the spec's role is {:?}", spec.role));
    }
    let result = match role {
        "slm" => {
            let hb_interval = hb_interval.unwrap_or_else(|| fail("slm: --hb-interval is required"));
            let hb_timeout = hb_timeout.unwrap_or_else(|| fail("slm: --hb-timeout is required"));
            if hb_interval.is_zero() {
                fail("--hb-interval must be > 0");
            }
            let config = slm::Config {
                workers: workers.unwrap_or_else(|| fail("slm: --workers is required")),
                hb_interval,
                hb_timeout,
            };
            slm::run(spec, config)
        }
        "worker" => worker::run(spec, step.unwrap_or_else(|| fail("worker: --step is required"))),
        _ => fail(&format!("unknown role {role:?}")),
    };
    if let Err(e) = result {
        eprintln!("foreign-mano: {e}");
        exit(1);
    }
    // the servers run on their own threads: the main thread only waits for a signal
    loop {
        std::thread::park();
    }
}
