//! A minimal HTTP/1.0 client over `std::net::TcpStream` (GET for `/health` and `/metrics`; any
//! method with headers and a body for the `/api/v1` storage API) and a Prometheus text-format
//! reader.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response: status code and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code of the status line.
    pub status: u16,
    /// The body, decoded lossily as UTF-8.
    pub body: String,
}

/// `GET path` with HTTP/1.0 (the server closes the connection after the response); bounded by
/// `timeout` for connect, write and each read.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response"))
}

/// A full response: status, headers in order, and the body's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header lines as (name, value), in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics, showing it, when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// `METHOD path` with HTTP/1.0, the given headers and body (Content-Length is added when the
/// body is not empty); the server closes the connection after the response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    s.write_all(&out)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_full(&raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response"))
}

/// Splits a response into status, headers and the body's bytes.
fn parse_full(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// Splits `HTTP/1.x CODE reason\r\n headers \r\n\r\n body`.
fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some(HttpResponse {
        status,
        body: body.to_string(),
    })
}

/// The value of one series in Prometheus text format.
///
/// `series` is the metric name with its labels exactly as printed, e.g.
/// `cpm_sip_requests_total{method="REGISTER"}`, or a bare name. A bare name whose family only
/// has labelled series yields their sum. `None` when no line matches.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let mut exact = None;
    let mut sum: Option<f64> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match split_sample(line) {
            Some(kv) => kv,
            None => continue,
        };
        if key == series {
            exact = Some(value);
        } else if !series.contains('{') && key.split('{').next() == Some(series) {
            *sum.get_or_insert(0.0) += value;
        }
    }
    exact.or(sum)
}

/// Whether the text mentions the metric family `name` at all (a `# TYPE`/`# HELP` line or a sample).
pub fn has_family(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        let rest = l
            .strip_prefix("# TYPE ")
            .or_else(|| l.strip_prefix("# HELP "))
            .unwrap_or(l);
        rest.strip_prefix(name)
            .is_some_and(|r| r.is_empty() || r.starts_with([' ', '{', '\t']))
    })
}

/// `name{labels} value [timestamp]` → (`name{labels}`, value). Label values may contain spaces.
fn split_sample(line: &str) -> Option<(&str, f64)> {
    let key_end = match line.find('{') {
        Some(open) if line[..open].find(char::is_whitespace).is_none() => {
            open + line[open..].find('}')? + 1
        }
        _ => line.find(char::is_whitespace)?,
    };
    let key = &line[..key_end];
    let value = line[key_end..].split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP cpm_sip_requests_total Requests received.\n\
        # TYPE cpm_sip_requests_total counter\n\
        cpm_sip_requests_total{method=\"REGISTER\"} 3\n\
        cpm_sip_requests_total{method=\"OPTIONS\"} 2 1700000000\n\
        cpm_registered_contacts 1\n\
        # TYPE cpm_actor_restarts_total counter\n";

    #[test]
    fn reads_series_and_sums_families() {
        assert_eq!(
            metric_value(TEXT, "cpm_sip_requests_total{method=\"REGISTER\"}"),
            Some(3.0)
        );
        assert_eq!(metric_value(TEXT, "cpm_sip_requests_total"), Some(5.0));
        assert_eq!(metric_value(TEXT, "cpm_registered_contacts"), Some(1.0));
        assert_eq!(
            metric_value(TEXT, "cpm_sip_requests_total{method=\"MESSAGE\"}"),
            None
        );
        assert_eq!(metric_value(TEXT, "cpm_registered"), None);
    }

    #[test]
    fn knows_families_without_samples() {
        assert!(has_family(TEXT, "cpm_actor_restarts_total"));
        assert!(has_family(TEXT, "cpm_sip_requests_total"));
        assert!(!has_family(TEXT, "cpm_sip_requests"));
    }

    #[test]
    fn parses_status_and_body() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!(
            r,
            HttpResponse {
                status: 200,
                body: "ok".into()
            }
        );
        assert!(parse_response(b"garbage").is_none());
    }

    #[test]
    fn parses_full_responses() {
        let r = parse_full(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"x\"\r\n\
              www-authenticate: Digest realm=\"x\"\r\n\r\n\xff{}",
        )
        .unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header_all("WWW-Authenticate"),
            vec!["Bearer realm=\"x\"", "Digest realm=\"x\""]
        );
        assert_eq!(r.body, b"\xff{}");
        assert!(parse_full(b"HTTP/1.1 200 OK\r\n").is_none());
    }
}
