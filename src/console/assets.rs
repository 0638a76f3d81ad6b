//! The console's stylesheet, script and icon, embedded in the binary and served under names that hold
//! a hash of their bytes (`/assets/console.1a2b3c4d5e6f7a8b.js`), so browsers may keep them for a
//! year: a new release has new names.

use std::sync::LazyLock;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const ICON: &str = include_str!("assets/favicon.svg");

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The path it is served at: `/assets/<name>`.
    pub path: String,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    /// A strong validator: its hash, quoted.
    pub etag: String,
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, text: &'static str) -> Asset {
        let hash = blake3::hash(text.as_bytes()).to_hex();
        let short = &hash.as_str()[..16];
        Asset {
            path: format!("/assets/{stem}.{short}.{ext}"),
            content_type,
            bytes: text.as_bytes(),
            etag: format!("\"{short}\""),
        }
    }
}

static STYLESHEET: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("console", "css", "text/css; charset=utf-8", CSS));
static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("console", "js", "text/javascript; charset=utf-8", JS));

static FAVICON: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("favicon", "svg", "image/svg+xml", ICON));

/// The icon, so that browsers do not ask for `/favicon.ico` (a 404 in their console).
pub fn favicon() -> &'static Asset {
    &FAVICON
}

pub fn stylesheet() -> &'static Asset {
    &STYLESHEET
}

pub fn script() -> &'static Asset {
    &SCRIPT
}

/// The asset served at `/assets/<name>`, if `name` is the current name of one.
pub fn find(name: &str) -> Option<&'static Asset> {
    [stylesheet(), script(), favicon()]
        .into_iter()
        .find(|a| a.path.strip_prefix("/assets/") == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_found_by_their_hashed_names_only() {
        let css = stylesheet();
        let name = css.path.strip_prefix("/assets/").unwrap();
        assert!(find(name).is_some());
        assert!(find("console.css").is_none());
        assert!(find("console.0000000000000000.js").is_none());
        assert_ne!(stylesheet().path, script().path);
    }
}
