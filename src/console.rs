//! The web console: everything a person does with the service, in the browser, served by the same
//! binary at `/` (SPEC section 10).
//!
//! Pages are rendered on the server from askama templates compiled into the binary
//! (`src/console/templates/`); a little plain JavaScript (`assets/console.js`, no build step)
//! adds drag and drop, the folder picker, upload progress and copy buttons, and every page works
//! without it but the upload. This module knows nothing of HTTP: the glue that reads requests,
//! cookies and forms and writes responses is `src/http/handlers/console.rs`.
//!
//! - [`csrf`]: the synchronizer tokens of the console's forms, derived from the browser session's
//!   secret (or, before sign-in, from a visitor cookie's), so nothing more is stored.
//! - [`markdown`]: `SKILL.md` rendered with pulldown-cmark and sanitized with ammonia.
//! - [`assets`]: the stylesheet and the script, served under names that hold their hash.
//! - [`snippets`]: ready-to-paste client configuration for a token.
//! - [`pages`]: the templates and what they show.
//!
//! The browser session itself is a login session of the auth actor
//! ([`crate::actors::auth::AuthService::login_browser`]): the rules that end a login's JWTs end
//! it too.

pub mod assets;
pub mod csrf;
pub mod markdown;
pub mod pages;
pub mod snippets;

/// The `Content-Security-Policy` of every console response: scripts and styles only from files
/// this server serves (no inline script, no `eval`), no frames, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The policy of a skill's file shown as text: it is never a document of this origin.
pub const FILE_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; sandbox";

/// Sent with every console response: the path is enough to tell where a click came from, and
/// nothing leaves for another site.
pub const REFERRER_POLICY: &str = "same-origin";

/// The cookie that holds the browser session's secret. Over HTTPS it carries the `__Host-`
/// prefix, which browsers accept only with `Secure`, `Path=/` and no `Domain`, so no other host
/// (a sibling sub-domain) can set or shadow it.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-agentskills_session"
    } else {
        "agentskills_session"
    }
}

/// The cookie that ties the sign-in and sign-up forms' CSRF token to this browser before it has
/// a session.
pub fn visitor_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-agentskills_visitor"
    } else {
        "agentskills_visitor"
    }
}

/// Skills shown on one page of the list.
pub const PAGE_SIZE: usize = 20;

/// The characters a path segment of a URL keeps as they are (RFC 3986's unreserved ones); every
/// other byte is percent-encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A skill file's path as it goes in a URL's path (`/skills/{id}/files/{here}`): each segment
/// percent-encoded, so a space is `%20` (not the `+` of a form, which a path keeps as a plus), a
/// `#` is `%23` (not the start of a fragment) and a `?` is `%3F`; the `/` between segments stay.
pub fn file_url_path(path: &str) -> String {
    path.split('/')
        .map(|segment| percent_encoding::utf8_percent_encode(segment, PATH_SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// A size in bytes for people: `512 B`, `1.5 KiB`, `16 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() < 0.05 || value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(16 * 1024 * 1024), "16 MiB");
        assert_eq!(human_bytes(100 * 1024 * 1024), "100 MiB");
    }

    #[test]
    fn file_paths_are_encoded_segment_by_segment() {
        assert_eq!(file_url_path("SKILL.md"), "SKILL.md");
        assert_eq!(file_url_path("docs/a b#c.md"), "docs/a%20b%23c.md");
        assert_eq!(file_url_path("a+b/c?d%e"), "a%2Bb/c%3Fd%25e");
        assert_eq!(file_url_path("ü/~x_y-z"), "%C3%BC/~x_y-z");
    }

    #[test]
    fn the_policy_allows_no_inline_script() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-eval"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
    }
}
