//! MANOBENCH_SPEC: the only input from the harness. Unknown fields are ignored.

use serde_json::Value;
use std::collections::BTreeMap;

pub struct Spec {
    pub id: String,
    pub role: String,
    pub bind: String,
    pub ports: BTreeMap<String, u16>,               // plane -> port to listen on
    pub peers: BTreeMap<String, BTreeMap<String, String>>, // peer id -> plane -> host:port to call
    pub bss: Option<String>,
    pub secret: Option<String>,
}

fn string(v: &Value, name: &str) -> Result<String, String> {
    v.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("MANOBENCH_SPEC: '{name}' must be a string"))
}

fn optional_string(v: &Value, name: &str) -> Result<Option<String>, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("MANOBENCH_SPEC: '{name}' must be a string or null")),
    }
}

impl Spec {
    pub fn from_env() -> Result<Spec, String> {
        let text = std::env::var("MANOBENCH_SPEC").map_err(|_| "MANOBENCH_SPEC (the instance's JSON spec) is not set".to_string())?;
        Spec::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Spec, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("MANOBENCH_SPEC is not JSON: {e}"))?;
        let mut ports = BTreeMap::new();
        for (plane, port) in v.get("ports").and_then(Value::as_object).ok_or("MANOBENCH_SPEC: 'ports' must be an object")? {
            let port = port.as_u64().filter(|p| *p <= 65535).ok_or_else(|| format!("MANOBENCH_SPEC: port of {plane} is not a port"))?;
            ports.insert(plane.clone(), port as u16);
        }
        let mut peers = BTreeMap::new();
        if let Some(obj) = v.get("peers").and_then(Value::as_object) {
            for (pid, planes) in obj {
                let mut addrs = BTreeMap::new();
                for (plane, addr) in planes.as_object().ok_or_else(|| format!("MANOBENCH_SPEC: peers.{pid} must be an object"))? {
                    let addr = addr.as_str().ok_or_else(|| format!("MANOBENCH_SPEC: peers.{pid}.{plane} must be host:port"))?;
                    addrs.insert(plane.clone(), addr.to_string());
                }
                peers.insert(pid.clone(), addrs);
            }
        }
        Ok(Spec {
            id: string(&v, "id")?,
            role: string(&v, "role").unwrap_or_default(),
            bind: string(&v, "bind")?,
            ports,
            peers,
            bss: optional_string(&v, "bss")?,
            secret: optional_string(&v, "secret")?,
        })
    }
}
