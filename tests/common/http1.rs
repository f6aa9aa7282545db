//! Just enough HTTP/1.1 for the tests' relays and impostors: one request
//! read off a kept-alive connection.

use std::io::BufRead;

/// The next request on the connection: its path and body (by
/// `Content-Length`); `None` when the connection is closed or cut.
pub fn read_request(reader: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return None;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    Some((path.to_owned(), body))
}
