//! The dashboard page: `GET /` and its two assets, embedded in the binary
//! (no CDN, works offline). The page asks for nothing secret in its URL: it
//! reads the key from the tab's session storage (or once from a share link's
//! fragment, which browsers never send), then calls the Connect JSON routes
//! (`connect`) and the watches as Connect streams, through the same key
//! check, scopes and audit as gRPC.
//!
//! Every answer carries a strict Content-Security-Policy (only this origin's
//! script, style and fetches; no inline script), `no-referrer` (a share
//! link's page never leaks its URL), `nosniff` and no framing.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use tonic::body::Body;

const INDEX: &str = include_str!("../../static/index.html");
const SCRIPT: &str = include_str!("../../static/app.js");
const STYLE: &str = include_str!("../../static/app.css");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The page's files: path, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", INDEX),
    ("/index.html", "text/html; charset=utf-8", INDEX),
    ("/assets/app.js", "text/javascript; charset=utf-8", SCRIPT),
    ("/assets/app.css", "text/css; charset=utf-8", STYLE),
];

/// The answer to `GET path`, when it is one of the page's.
pub fn asset(path: &str, head: bool) -> Option<http::Response<Body>> {
    if path == "/favicon.ico" {
        let mut response = http::Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        return Some(response);
    }
    let (_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    let length = body.len();
    let body = if head {
        Body::empty()
    } else {
        Body::new(Full::new(Bytes::from_static(body.as_bytes())))
    };
    let mut response = http::Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    // Embedded in this binary: revalidate, so an upgrade is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(response)
}

/// The dashboard's URL at `base` that signs in with `token`: the key is in
/// the fragment, which a browser keeps to itself (never in a request, a
/// server log or a Referer), and the page moves it to the tab's session
/// storage and out of the address bar at once.
pub fn share_link(base: &str, token: &str) -> String {
    format!("{}/#key={token}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_served_with_a_strict_policy_and_others_pass() {
        for path in ["/", "/index.html", "/assets/app.js", "/assets/app.css"] {
            let response = asset(path, false);
            let headers = response.as_ref().map(|r| r.headers().clone());
            let csp = headers
                .as_ref()
                .and_then(|h| h.get(header::CONTENT_SECURITY_POLICY).cloned());
            assert_eq!(csp, Some(HeaderValue::from_static(CSP)), "{path}");
            let referrer = headers
                .as_ref()
                .and_then(|h| h.get(header::REFERRER_POLICY).cloned());
            assert_eq!(referrer, Some(HeaderValue::from_static("no-referrer")));
        }
        assert!(asset("/kpi.v1.KpiService/GetScorecard", false).is_none());
        assert!(asset("/assets/../Cargo.toml", false).is_none());
        assert_eq!(
            asset("/favicon.ico", false).map(|r| r.status()),
            Some(StatusCode::NO_CONTENT)
        );
        // The page loads its script and style from these paths, and no
        // inline script (the policy would block it).
        assert!(INDEX.contains("/assets/app.js") && INDEX.contains("/assets/app.css"));
        assert!(!INDEX.contains("<script>") && !INDEX.contains("<style"));
    }
}
