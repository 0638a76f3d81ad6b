//! `SKILL.md` for people: the front matter apart, the body rendered from Markdown with
//! pulldown-cmark, then sanitized with ammonia, whatever the file holds.
//!
//! A skill's author is not the person who reads the console (a shared or downloaded skill may be
//! hostile), so the HTML keeps only ammonia's allowlist of harmless elements and attributes: no
//! script or style element, no event handler, no `javascript:` or `data:` URL, no image (the
//! console loads nothing from another host), and every link opens without a referrer.
//!
//! A relative link (`[style](reference/style.md)`) names another file of the skill: it is
//! rewritten to the console's page of that file, and dropped (its text kept) when the skill has no
//! such file, rather than left to resolve against the console's own URLs into a page that is not
//! there.

use std::borrow::Cow;
use std::collections::HashSet;

use ammonia::{UrlRelative, UrlRelativeEvaluate};
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
///
/// `file_link` gives the URL that shows a file of the skill, from its path inside the skill
/// (decoded and normalized: `./a/../b.md` is `b.md`), or `None` when there is no such file.
pub fn render_skill_md<F>(text: &str, file_link: F) -> RenderedSkillMd
where
    F: Fn(&str) -> Option<String> + Send + Sync,
{
    let (front_matter, body) = split_front_matter(text);
    RenderedSkillMd {
        front_matter: front_matter.map(str::to_owned),
        html: render(body, file_link),
    }
}

/// Markdown to sanitized HTML, relative links through `file_link` (see [`render_skill_md`]).
pub fn render<F>(markdown: &str, file_link: F) -> String
where
    F: Fn(&str) -> Option<String> + Send + Sync,
{
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut unsafe_html, Parser::new_ext(markdown, options));
    ammonia::Builder::default()
        .rm_tags(["img"])
        .url_schemes(HashSet::from(["http", "https", "mailto"]))
        .url_relative(UrlRelative::Custom(Box::new(SkillLinks(file_link))))
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&unsafe_html)
        .to_string()
}

/// Rewrites the relative links of a skill's Markdown (ammonia asks it about every URL without a
/// scheme; what it returns is sanitized like any other URL).
struct SkillLinks<F>(F);

impl<'a, F> UrlRelativeEvaluate<'a> for SkillLinks<F>
where
    F: Fn(&str) -> Option<String> + Send + Sync + 'a,
{
    fn evaluate<'url>(&self, url: &'url str) -> Option<Cow<'url, str>> {
        // A link within the page, or to a path of this site: left as written.
        if url.is_empty() || url.starts_with(['#', '?', '/']) {
            return Some(Cow::Borrowed(url));
        }
        let target = url.split(['#', '?']).next().unwrap_or_default();
        let decoded = percent_encoding::percent_decode_str(target)
            .decode_utf8()
            .ok()?;
        let mut parts: Vec<&str> = Vec::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => {}
                // Out of the skill's folder: not a file of the skill.
                ".." => {
                    parts.pop()?;
                }
                name => parts.push(name),
            }
        }
        (self.0)(&parts.join("/")).map(Cow::Owned)
    }
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

    fn no_files(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn relative_links_open_the_skills_own_files_and_no_other() {
        let files = ["reference/style.md", "docs/a b#c.md"];
        let link = |path: &str| files.contains(&path).then(|| format!("/f?file={path}"));
        let html = render(
            concat!(
                "[style](reference/style.md) [same](./reference/../reference/style.md#top) ",
                "[odd](docs/a%20b%23c.md) [angle](<docs/a b%23c.md>) [gone](missing.md) ",
                "[out](../../etc/passwd) [here](#steps) [site](/skills) [web](https://example.com/x)",
            ),
            link,
        );
        for want in [
            r#"<a href="/f?file=reference/style.md" rel="noopener noreferrer nofollow">style</a>"#,
            r#"<a href="/f?file=reference/style.md" rel="noopener noreferrer nofollow">same</a>"#,
            r#"<a href="/f?file=docs/a b#c.md" rel="noopener noreferrer nofollow">odd</a>"#,
            r#"<a href="/f?file=docs/a b#c.md" rel="noopener noreferrer nofollow">angle</a>"#,
            r#"<a rel="noopener noreferrer nofollow">gone</a>"#,
            r#"<a rel="noopener noreferrer nofollow">out</a>"#,
            r##"<a href="#steps" rel="noopener noreferrer nofollow">here</a>"##,
            r#"<a href="/skills" rel="noopener noreferrer nofollow">site</a>"#,
            r#"<a href="https://example.com/x" rel="noopener noreferrer nofollow">web</a>"#,
        ] {
            assert!(html.contains(want), "{want} is not in {html}");
        }
    }

    #[test]
    fn front_matter_is_kept_apart_and_the_body_rendered() {
        let md = render_skill_md(
            "---\nname: pdf\ndescription: PDFs\n---\n# Title\n\nSome *text*.\n",
            no_files,
        );
        assert_eq!(
            md.front_matter.as_deref(),
            Some("name: pdf\ndescription: PDFs\n")
        );
        assert!(md.html.contains("<h1>Title</h1>"), "{}", md.html);
        assert!(md.html.contains("<em>text</em>"), "{}", md.html);
        let plain = render_skill_md("no front matter\n", no_files);
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
        let html = render(hostile, no_files).to_ascii_lowercase();
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
