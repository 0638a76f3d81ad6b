//! `SKILL.md` for people: the front matter apart, the body rendered from Markdown with
//! pulldown-cmark, then sanitized with ammonia, whatever the file holds.
//!
//! A skill's author is not the person who reads the console (a shared or downloaded skill may be
//! hostile), so the HTML keeps only ammonia's allowlist of harmless elements and attributes: no
//! script or style element, no event handler, no `javascript:` or `data:` URL, no image (the
//! console loads nothing from another host), and every link opens without a referrer.

use std::collections::HashSet;

use pulldown_cmark::{Options, Parser, html};

/// A `SKILL.md` as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedSkillMd {
    /// The YAML between the `---` lines, as written (shown as text, never as HTML).
    pub front_matter: Option<String>,
    /// The body's HTML, sanitized.
    pub html: String,
}

/// Renders a `SKILL.md`. Linear in the text's length; callers run it on the blocking pool.
pub fn render_skill_md(text: &str) -> RenderedSkillMd {
    let (front_matter, body) = split_front_matter(text);
    RenderedSkillMd {
        front_matter: front_matter.map(str::to_owned),
        html: render(body),
    }
}

/// Markdown to sanitized HTML.
pub fn render(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut unsafe_html, Parser::new_ext(markdown, options));
    ammonia::Builder::default()
        .rm_tags(["img"])
        .url_schemes(HashSet::from(["http", "https", "mailto"]))
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&unsafe_html)
        .to_string()
}

/// The front matter (between a first line `---` and the next line `---`) and the rest.
fn split_front_matter(text: &str) -> (Option<&str>, &str) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = text
        .strip_prefix("---\r\n")
        .or_else(|| text.strip_prefix("---\n"))
    else {
        return (None, text);
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end_matches(['\r', '\n']) == "---" {
            return (Some(&rest[..offset]), &rest[offset + line.len()..]);
        }
        offset += line.len();
    }
    (None, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_is_kept_apart_and_the_body_rendered() {
        let md =
            render_skill_md("---\nname: pdf\ndescription: PDFs\n---\n# Title\n\nSome *text*.\n");
        assert_eq!(
            md.front_matter.as_deref(),
            Some("name: pdf\ndescription: PDFs\n")
        );
        assert!(md.html.contains("<h1>Title</h1>"), "{}", md.html);
        assert!(md.html.contains("<em>text</em>"), "{}", md.html);
        let plain = render_skill_md("no front matter\n");
        assert_eq!(plain.front_matter, None);
    }

    #[test]
    fn nothing_that_runs_survives() {
        let hostile = concat!(
            "<script>alert(1)</script>\n\n",
            "<img src=x onerror=alert(2)>\n\n",
            "[click](javascript:alert(3)) [data](data:text/html,<b>x</b>)\n\n",
            "<a href=\"JaVaScRiPt:alert(4)\" onclick=\"alert(5)\">a</a>\n\n",
            "<div onmouseover=\"alert(6)\" style=\"background:url(x)\">d</div>\n\n",
            "<iframe src=\"https://evil.example\"></iframe><svg><script>alert(7)</script></svg>\n\n",
            "<form action=\"https://evil.example\"><input name=x></form>\n",
        );
        let html = render(hostile).to_ascii_lowercase();
        for bad in [
            "<script",
            "onerror",
            "onclick",
            "onmouseover",
            "javascript:",
            "data:",
            "<iframe",
            "<img",
            "style=",
            "<form",
            "<input",
            "<svg",
        ] {
            assert!(!html.contains(bad), "{bad} survived: {html}");
        }
        assert!(
            html.contains("rel=\"noopener noreferrer nofollow\""),
            "{html}"
        );
    }
}
