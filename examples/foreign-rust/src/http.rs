//! A small HTTP/1.1 server and client over std::net, with JSON bodies: exactly what the contract needs.
//!
//! Server: one thread per listening plane accepts, one thread per connection serves it (keep-alive:
//! requests in sequence until the peer closes or says `Connection: close`). Bodies need a `Content-Length`
//! (no chunked requests). A malformed request line or header is answered 400 and the connection closed; a
//! body that is not the JSON the route wants is answered 400 and the connection kept; an oversized body
//! 413 and closed. A handler never takes the process down.
//!
//! Client: a pool of idle keep-alive connections per address; a call takes one (or dials), sends, reads
//! the answer, and gives it back if the server keeps it open. A call that fails on a reused connection
//! before any byte of the answer came is tried once more on a fresh one (the server may have closed the
//! idle connection meanwhile). Every socket has TCP_NODELAY (no Nagle / delayed-ACK stalls of 40 ms).

use serde_json::Value;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Largest body accepted (413 above): the paper's padded messages are kB to a few MB.
pub const MAX_BODY: usize = 64 * 1024 * 1024;
const MAX_LINE: usize = 16 * 1024;
const MAX_HEADERS: usize = 128;
const POOL_IDLE_PER_ADDR: usize = 32;

pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: Value) -> Response {
        Response { status, body: value.to_string().into_bytes() }
    }
    pub fn error(status: u16, reason: &str) -> Response {
        Response::json(status, serde_json::json!({ "error": reason }))
    }
}

/// A request body as a JSON object, or the 400 to answer.
pub fn json_object(req: &Request) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Response::error(400, "the body must be a JSON object")),
        Err(e) => Err(Response::error(400, &format!("malformed JSON: {e}"))),
    }
}

pub fn field_str(map: &serde_json::Map<String, Value>, name: &str) -> Result<String, Response> {
    match map.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(Response::error(400, &format!("field '{name}' must be a non-empty string"))),
    }
}

pub fn field_int(map: &serde_json::Map<String, Value>, name: &str) -> Result<i64, Response> {
    match map.get(name).and_then(Value::as_i64) {
        Some(v) => Ok(v),
        None => Err(Response::error(400, &format!("field '{name}' must be an integer"))),
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Bind `bind:port` and serve it forever on background threads. Err if the address cannot be bound.
pub fn serve(bind: &str, port: u16, handler: Handler) -> io::Result<()> {
    let listener = TcpListener::bind((bind, port))?;
    thread::Builder::new().name(format!("accept-{port}")).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    let handler = handler.clone();
                    let _ = thread::Builder::new()
                        .name("conn".into())
                        .stack_size(256 * 1024)
                        .spawn(move || serve_connection(stream, handler));
                }
                Err(_) => thread::sleep(Duration::from_millis(5)), // EMFILE and the like: never fatal
            }
        }
    })?;
    Ok(())
}

enum ReadError {
    Closed,             // the peer closed between requests (or the socket failed): just stop
    Bad(u16, String),   // answer this status, then close
}

fn serve_connection(stream: TcpStream, handler: Handler) {
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    loop {
        match read_request(&mut reader, &mut writer) {
            Ok((request, keep_alive)) => {
                let response = handler(&request);
                if write_response(&mut writer, &response, keep_alive).is_err() || !keep_alive {
                    break;
                }
            }
            Err(ReadError::Closed) => break,
            Err(ReadError::Bad(status, reason)) => {
                let _ = write_response(&mut writer, &Response::error(status, &reason), false);
                break;
            }
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

/// One line (without CRLF), at most MAX_LINE bytes; None at a clean EOF.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long or truncated"));
    }
    while matches!(buf.last(), Some(b'\n') | Some(b'\r')) {
        buf.pop();
    }
    String::from_utf8(buf).map(Some).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

struct Head {
    status_or_method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

enum HeadError {
    Io(String),  // the socket failed or timed out
    Bad(String), // the bytes are not HTTP
}

impl From<HeadError> for String {
    fn from(e: HeadError) -> String {
        match e {
            HeadError::Io(s) | HeadError::Bad(s) => s,
        }
    }
}

fn line_error(e: io::Error) -> HeadError {
    if e.kind() == io::ErrorKind::InvalidData {
        HeadError::Bad(e.to_string())
    } else {
        HeadError::Io(e.to_string())
    }
}

/// The start line and headers. Ok(None): clean EOF before anything.
fn read_head(reader: &mut impl BufRead) -> Result<Option<Head>, HeadError> {
    let first = loop {
        match read_line(reader) {
            Ok(None) => return Ok(None),
            Ok(Some(line)) if line.is_empty() => continue, // tolerate stray CRLF between messages
            Ok(Some(line)) => break line,
            Err(e) => return Err(line_error(e)),
        }
    };
    let mut parts = first.splitn(3, ' ');
    let a = parts.next().unwrap_or("").to_string();
    let b = parts.next().unwrap_or("").to_string();
    let c = parts.next().unwrap_or("").trim().to_string();
    let mut headers = Vec::new();
    loop {
        let line = match read_line(reader) {
            Ok(Some(line)) => line,
            Ok(None) => return Err(HeadError::Io("connection closed inside the headers".into())),
            Err(e) => return Err(line_error(e)),
        };
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(HeadError::Bad("too many headers".into()));
        }
        let (k, v) = line.split_once(':').ok_or_else(|| HeadError::Bad(format!("malformed header line {line:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Some(Head { status_or_method: a, target: b, version: c, headers }))
}

fn read_request(reader: &mut BufReader<TcpStream>, writer: &mut TcpStream) -> Result<(Request, bool), ReadError> {
    let head = match read_head(reader) {
        Ok(Some(h)) => h,
        Ok(None) | Err(HeadError::Io(_)) => return Err(ReadError::Closed),
        Err(HeadError::Bad(e)) => return Err(ReadError::Bad(400, e)),
    };
    if head.status_or_method.is_empty() || !head.target.starts_with('/') || !head.version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(400, "malformed request line".into()));
    }
    let keep_alive = if head.version == "HTTP/1.0" {
        head.has_token("Connection", "keep-alive")
    } else {
        !head.has_token("Connection", "close")
    };
    if head.header("Transfer-Encoding").is_some() {
        return Err(ReadError::Bad(400, "chunked request bodies are not supported: send Content-Length".into()));
    }
    let length = match head.header("Content-Length") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| ReadError::Bad(400, "bad Content-Length".into()))?,
    };
    if length > MAX_BODY {
        return Err(ReadError::Bad(413, format!("body of {length} bytes exceeds {MAX_BODY}")));
    }
    if length > 0 && head.has_token("Expect", "100-continue") {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|_| ReadError::Closed)?;
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).map_err(|_| ReadError::Closed)?;
    let path = head.target.split('?').next().unwrap_or("/").to_string();
    Ok((Request { method: head.status_or_method, path, body }, keep_alive))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_response(w: &mut TcpStream, r: &Response, keep_alive: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        r.status,
        reason(r.status),
        r.body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    )
    .into_bytes();
    out.extend_from_slice(&r.body);
    w.write_all(&out)?;
    w.flush()
}

// ---------------------------------------------------------------------------------------------------------
// Client

#[derive(Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub io: Duration, // each read / write on the socket (the wait for the answer included)
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

#[derive(Default)]
pub struct Client {
    idle: Mutex<HashMap<String, Vec<Conn>>>,
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Client {
    pub fn new() -> Client {
        Client::default()
    }

    /// POST `body` as JSON to http://`addr``path`; Err(text) on any transport failure (not on a 4xx/5xx).
    pub fn post(&self, addr: &str, path: &str, body: &Value, headers: &[(&str, &str)], t: Timeouts) -> Result<Reply, String> {
        let payload = body.to_string().into_bytes();
        let mut message = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        );
        for (k, v) in headers {
            message.push_str(&format!("{k}: {v}\r\n"));
        }
        message.push_str("\r\n");
        let mut bytes = message.into_bytes();
        bytes.extend_from_slice(&payload);

        let pooled = self.idle.lock().unwrap().get_mut(addr).and_then(|v| v.pop());
        if let Some(mut conn) = pooled {
            if conn.set_timeouts(t).is_ok() {
                match exchange(&mut conn, &bytes) {
                    Ok((reply, reusable)) => {
                        self.give_back(addr, conn, reusable);
                        return Ok(reply);
                    }
                    Err(Failure::BeforeAnswer(_)) => {} // stale idle connection: dial afresh below
                    Err(Failure::During(e)) => return Err(e),
                }
            }
        }
        let mut conn = Conn::dial(addr, t)?;
        match exchange(&mut conn, &bytes) {
            Ok((reply, reusable)) => {
                self.give_back(addr, conn, reusable);
                Ok(reply)
            }
            Err(Failure::BeforeAnswer(e)) | Err(Failure::During(e)) => Err(e),
        }
    }

    fn give_back(&self, addr: &str, conn: Conn, reusable: bool) {
        if !reusable {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        let list = idle.entry(addr.to_string()).or_default();
        if list.len() < POOL_IDLE_PER_ADDR {
            list.push(conn);
        }
    }
}

impl Conn {
    fn dial(addr: &str, t: Timeouts) -> Result<Conn, String> {
        let targets: Vec<SocketAddr> = addr.to_socket_addrs().map_err(|e| format!("resolve {addr}: {e}"))?.collect();
        let mut last = format!("no address for {addr}");
        for target in targets {
            match TcpStream::connect_timeout(&target, t.connect) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let writer = stream.try_clone().map_err(|e| e.to_string())?;
                    let conn = Conn { reader: BufReader::with_capacity(16 * 1024, stream), writer };
                    conn.set_timeouts(t).map_err(|e| e.to_string())?;
                    return Ok(conn);
                }
                Err(e) => last = format!("connect {addr}: {e}"),
            }
        }
        Err(last)
    }

    fn set_timeouts(&self, t: Timeouts) -> io::Result<()> {
        let io = if t.io.is_zero() { None } else { Some(t.io) };
        self.writer.set_read_timeout(io)?;
        self.writer.set_write_timeout(io)
    }
}

enum Failure {
    BeforeAnswer(String), // nothing of an answer was read: safe to try again on a new connection
    During(String),
}

fn exchange(conn: &mut Conn, bytes: &[u8]) -> Result<(Reply, bool), Failure> {
    conn.writer.write_all(bytes).map_err(|e| Failure::BeforeAnswer(e.to_string()))?;
    // the first byte of the answer tells a stale connection (EOF / reset) from a slow server
    let available = conn.reader.fill_buf().map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut {
            Failure::During(format!("timed out: {e}"))
        } else {
            Failure::BeforeAnswer(e.to_string())
        }
    })?;
    if available.is_empty() {
        return Err(Failure::BeforeAnswer("connection closed before the answer".into()));
    }
    read_response(&mut conn.reader).map_err(Failure::During)
}

fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(Reply, bool), String> {
    let head = loop {
        let head = read_head(reader)?.ok_or("connection closed before the answer")?;
        let status: u16 = head.target.parse().map_err(|_| format!("bad status line {:?}", head.target))?;
        if (100..200).contains(&status) {
            continue; // 100 Continue and friends: the real answer follows
        }
        break head;
    };
    let status: u16 = head.target.parse().unwrap_or(0);
    let mut reusable = head.status_or_method == "HTTP/1.1" && !head.has_token("Connection", "close");
    let body = if head.has_token("Transfer-Encoding", "chunked") {
        read_chunked(reader)?
    } else if let Some(len) = head.header("Content-Length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length in answer")?;
        if len > MAX_BODY {
            return Err("answer too large".into());
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        body
    } else if status == 204 || status == 304 {
        Vec::new()
    } else {
        reusable = false; // delimited by the close of the connection
        let mut body = Vec::new();
        reader.by_ref().take(MAX_BODY as u64).read_to_end(&mut body).map_err(|e| e.to_string())?;
        body
    };
    Ok((Reply { status, body }, reusable))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader).map_err(|e| e.to_string())?.ok_or("closed inside a chunked body")?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {line:?}"))?;
        if size == 0 {
            // trailers, then the empty line
            while let Some(l) = read_line(reader).map_err(|e| e.to_string())? {
                if l.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err("answer too large".into());
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).map_err(|e| e.to_string())?;
        read_line(reader).map_err(|e| e.to_string())?;
    }
}
