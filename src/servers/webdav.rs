//! WebDAV `PROPFIND` on the origin: the listing protocol Pelican clients use.
//!
//! Pelican's clients (pelicanfs, the `pelican` CLI) list a collection by sending
//! `PROPFIND` with `Depth: 1` to the director's `collections-url` (this origin) and read
//! a `207 Multi-Status` answer: one `<D:response>` for the collection itself and one per
//! child, each with `href`, `resourcetype`, `getcontentlength` and `getlastmodified`.
//! `Depth: 0` answers for the resource alone; `infinity` is treated as `1`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::files::{self, FileError};
use crate::paths::encode_path;

/// The `PROPFIND` method.
pub const PROPFIND: &str = "PROPFIND";

/// Answers `PROPFIND` for the object path `path` (clean), which is `real` on disk
/// under the canonical export `root`.
pub async fn propfind(
    root: &Path,
    real: &Path,
    meta: &std::fs::Metadata,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response, FileError> {
    let depth0 = headers
        .get("depth")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|d| d.trim() == "0");
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">\n",
    );
    let size = if meta.is_dir() { 0 } else { meta.len() };
    push_response(&mut body, path, meta.is_dir(), size, meta.modified().ok());
    if meta.is_dir() && !depth0 {
        let base = path.trim_end_matches('/');
        for entry in files::list(root, real).await? {
            let child = format!("{base}/{}", entry.name);
            push_response(&mut body, &child, entry.is_dir, entry.size, entry.modified);
        }
    }
    body.push_str("</D:multistatus>\n");
    let mut response = (StatusCode::MULTI_STATUS, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    Ok(response)
}

fn push_response(
    body: &mut String,
    path: &str,
    is_dir: bool,
    size: u64,
    modified: Option<SystemTime>,
) {
    let mut href = encode_path(path);
    if is_dir && !href.ends_with('/') {
        href.push('/');
    }
    let name = path.rsplit('/').next().unwrap_or_default();
    let kind = if is_dir { "<D:collection/>" } else { "" };
    let modified = modified.map(http_date).unwrap_or_default();
    body.push_str(&format!(
        "<D:response><D:href>{}</D:href><D:propstat><D:prop>\
         <D:displayname>{}</D:displayname><D:resourcetype>{kind}</D:resourcetype>\
         <D:getcontentlength>{size}</D:getcontentlength>\
         <D:getlastmodified>{modified}</D:getlastmodified>\
         </D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>\n",
        xml_escape(&href),
        xml_escape(name),
    ));
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// RFC 1123 date (`Fri, 27 Nov 2026 04:15:34 GMT`), as WebDAV's `getlastmodified` wants.
pub fn http_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_rfc1123() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_752_934);
        assert_eq!(http_date(t), "Fri, 27 Nov 2026 04:15:34 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(xml_escape("a&b<c>\""), "a&amp;b&lt;c&gt;&quot;");
    }
}
