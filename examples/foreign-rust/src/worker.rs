//! A worker m_i: `POST /task {req, task}` sleeps `--step` seconds, then answers 200 {req, task, by}.
//! Stateless and idempotent: a survivor SLM may call the same task again after a takeover, and a call
//! never waits for another (one thread per connection).

use crate::http::{self, field_int, field_str, json_object, Request, Response};
use crate::spec::Spec;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub fn run(spec: Spec, step: Duration) -> Result<(), String> {
    let id = spec.id.clone();
    for (plane, port) in &spec.ports {
        let (plane, id) = (plane.clone(), id.clone());
        let handler: http::Handler = Arc::new(move |req: &Request| handle(&plane, &id, step, req));
        http::serve(&spec.bind, *port, handler).map_err(|e| format!("cannot listen on {}:{port}: {e}", spec.bind))?;
    }
    crate::log(&id, &format!("worker listening on {} {:?}, step {:.3} s", spec.bind, spec.ports, step.as_secs_f64()));
    Ok(())
}

fn handle(plane: &str, id: &str, step: Duration, req: &Request) -> Response {
    match (plane, req.method.as_str(), req.path.as_str()) {
        ("op", "GET", "/health") => Response::json(200, json!({"ready": true, "id": id})),
        ("op", "POST", "/task") => {
            let body = match json_object(req) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let (r, task) = match (field_str(&body, "req"), field_int(&body, "task")) {
                (Ok(r), Ok(t)) => (r, t),
                (Err(e), _) | (_, Err(e)) => return e,
            };
            std::thread::sleep(step);
            Response::json(200, json!({"req": r, "task": task, "by": id}))
        }
        ("op", _, "/health") | ("op", _, "/task") => Response::error(405, "method not allowed"),
        _ => Response::error(404, "no such route"),
    }
}
