//! The web console over real HTTP, as a browser without JavaScript sees it (and as its script
//! uploads): cookies, CSRF and `Origin` checks, security headers, session ends, the sign-in
//! limits, sanitized Markdown, skill files never served as HTML, page sizes, and a whole walk
//! through every page.

use std::collections::HashMap;
use std::io::Write as _;

use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::{Client, Response, StatusCode};
use scraper::{Html, Selector};
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};

/// The policy every console response carries, word for word.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A browser: its own cookies, no redirects followed, forms sent from the server's own origin.
pub(crate) struct Browser {
    client: Client,
    base: String,
    origin: String,
    cookies: HashMap<String, String>,
    /// Extra headers on every request (a proxy's `X-Forwarded-Proto`).
    extra: Vec<(&'static str, String)>,
}

impl Browser {
    pub(crate) fn new(app: &TestApp) -> Browser {
        Browser {
            client: Client::builder()
                .no_proxy()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: app.base.clone(),
            origin: app.base.clone(),
            cookies: HashMap::new(),
            extra: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keeps the cookies a response sets (a `Max-Age=0` one is deleted).
    fn remember(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            let value = value.to_str().unwrap();
            let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
            let (name, v) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), v.to_owned());
            }
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Response {
        let mut req = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header());
        for (k, v) in &self.extra {
            req = req.header(*k, v);
        }
        let res = req.send().await.unwrap();
        self.remember(res.headers());
        res
    }

    /// A page's status and HTML.
    pub(crate) async fn page(&mut self, path: &str) -> (StatusCode, String) {
        let res = self.get(path).await;
        (res.status(), res.text().await.unwrap())
    }

    /// Posts a form with `origin` as its `Origin` (`None`: no `Origin` header at all).
    pub(crate) async fn post_from(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Response {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        for (k, v) in &self.extra {
            req = req.header(*k, v);
        }
        let res = req.send().await.unwrap();
        self.remember(res.headers());
        res
    }

    pub(crate) async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Response {
        let origin = self.origin.clone();
        self.post_from(path, fields, Some(&origin)).await
    }

    /// The CSRF token of the page at `path` (its `<meta name="csrf-token">`).
    async fn csrf(&mut self, path: &str) -> String {
        let (status, html) = self.page(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        csrf_of(&html)
    }

    async fn sign_up(&mut self, name: &str) -> Response {
        let csrf = self.csrf("/signup").await;
        let email = format!("{name}@example.com");
        let password = format!("{name}-password-123");
        self.post(
            "/signup",
            &[
                ("csrf", &csrf),
                ("email", &email),
                ("username", name),
                ("password", &password),
            ],
        )
        .await
    }

    pub(crate) async fn sign_in(&mut self, login: &str, password: &str) -> Response {
        let csrf = self.csrf("/signin").await;
        self.post(
            "/signin",
            &[("csrf", &csrf), ("login", login), ("password", password)],
        )
        .await
    }

    /// Uploads `files` (path, bytes) as the console's script does: multipart to
    /// `/skills/upload` with the page's CSRF token in `X-CSRF-Token`.
    async fn upload(&mut self, csrf: Option<&str>, files: &[(&str, &[u8])]) -> Response {
        // The body a browser's FormData makes: one `files` part per file, named by its path.
        let boundary = "consoleTestBoundary7MA4YWxk";
        let mut body = Vec::new();
        for (path, bytes) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let mut req = self
            .client
            .post(format!("{}/skills/upload", self.base))
            .header("cookie", self.cookie_header())
            .header("origin", &self.origin)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        if let Some(csrf) = csrf {
            req = req.header("x-csrf-token", csrf);
        }
        req.send().await.unwrap()
    }

    fn session_cookie(&self) -> Option<String> {
        self.cookies.get("agentskills_session").cloned()
    }
}

/// Posts `/skills` with owned field values.
async fn post_pairs(
    browser: &mut Browser,
    fields: &[(&str, String)],
    origin: Option<&str>,
) -> Response {
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    browser.post_from("/skills", &pairs, origin).await
}

pub(crate) fn csrf_of(html: &str) -> String {
    let doc = Html::parse_document(html);
    let meta = Selector::parse("meta[name=csrf-token]").unwrap();
    doc.select(&meta)
        .next()
        .and_then(|m| m.value().attr("content"))
        .unwrap()
        .to_owned()
}

pub(crate) fn location(res: &Response) -> String {
    res.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn text_of(html: &str, selector: &str) -> String {
    let doc = Html::parse_document(html);
    let sel = Selector::parse(selector).unwrap();
    doc.select(&sel)
        .map(|e| e.text().collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for (name, data) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// The first skill id linked from a page.
fn skill_id_in(html: &str) -> String {
    let doc = Html::parse_document(html);
    let sel = Selector::parse("[data-testid=skill-row] a").unwrap();
    let href = doc
        .select(&sel)
        .next()
        .and_then(|a| a.value().attr("href"))
        .unwrap();
    href.trim_start_matches("/skills/").to_owned()
}

backend_tests!(
    the_whole_walk_through_the_console,
    session_cookies_are_httponly_samesite_and_secure_only_behind_a_trusted_https_proxy,
    changes_need_the_csrf_token_and_this_sites_origin,
    every_page_has_the_security_headers_and_stays_small,
    signing_out_changing_the_password_and_signing_out_everywhere_end_browser_sessions,
    sign_in_is_limited_and_hashed_like_the_api_login,
    a_hostile_skill_md_is_rendered_with_nothing_that_runs,
    skill_files_are_never_served_as_html,
    a_file_whose_path_needs_percent_encoding_opens_and_its_links_work,
    the_list_pages_searches_and_says_what_to_do_when_empty,
    the_editors_save_only_onto_the_version_they_show,
    a_repository_is_imported_and_synced_from_the_console,
);

async fn the_whole_walk_through_the_console(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut browser = Browser::new(&app);

    // Signed out, every page leads to the sign-in page.
    for path in ["/", "/skills", "/tokens", "/account", "/status"] {
        let res = browser.get(path).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&res), "/signin", "{path}");
    }

    // Sign up: signed in at once, on an empty list that says what to do.
    let res = browser.sign_up("walker").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/skills?notice=signed-up");
    let (status, html) = browser.page("/skills").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text_of(&html, "#skills-empty").contains("no skills yet"));
    assert_eq!(text_of(&html, "#signed-in-as"), "walker");
    let csrf = csrf_of(&html);

    // Create a skill from a name and description; a bad name is shown next to its field.
    let res = browser
        .post(
            "/skills",
            &[("csrf", &csrf), ("name", "Bad Name"), ("description", "x")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(
        !text_of(&html, "#create-skill-name-error").is_empty(),
        "{html}"
    );
    let res = browser
        .post(
            "/skills",
            &[
                ("csrf", &csrf),
                ("name", "notes"),
                ("description", "Takes notes."),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(location(&res).starts_with("/skills/"));

    // Upload a zip through the endpoint the page's script uses.
    let zip = zip_of(&[
        (
            "pdf/SKILL.md",
            b"---\nname: pdf\ndescription: Work with PDF files.\nversion: 2\n---\n# PDF\n\nUse `scripts/run.py`.\n",
        ),
        ("pdf/scripts/run.py", b"print('hello')\n"),
    ]);
    let res = browser.upload(Some(&csrf), &[("pdf.zip", &zip)]).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["skills"][0]["name"], "pdf");
    assert_eq!(answer["warnings"][0]["code"], "unknown-field");
    let pdf = answer["id"].as_str().unwrap().to_owned();

    // The list shows both, and searching finds one.
    let (_, html) = browser.page("/skills?search=pdf").await;
    assert_eq!(skill_id_in(&html), pdf);
    assert!(text_of(&html, "#skills-count").contains("1 skill"));

    // The skill's page: its tree, SKILL.md rendered, the warning, a text file with its lines.
    let (status, html) = browser.page(&format!("/skills/{pdf}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text_of(&html, "#file-tree").contains("run.py"));
    assert!(text_of(&html, "#skill-md-rendered").contains("PDF"));
    assert!(text_of(&html, "#skill-warnings").contains("version"));
    let (_, html) = browser
        .page(&format!("/skills/{pdf}?file=scripts%2Frun.py"))
        .await;
    assert_eq!(text_of(&html, "#file-lines li"), "print('hello')");

    // A bad description: the API's message next to the field, nothing saved.
    let res = browser
        .post(
            &format!("/skills/{pdf}/description"),
            &[("csrf", &csrf), ("description", "   ")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    let error = text_of(&html, "#description-error");
    assert!(error.contains("empty"), "{error}");
    assert_eq!(text_of(&html, "#skill-description"), "Work with PDF files.");
    // A good one is saved into SKILL.md too.
    let res = browser
        .post(
            &format!("/skills/{pdf}/description"),
            &[("csrf", &csrf), ("description", "Reads and writes PDFs.")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = browser.page(&format!("/skills/{pdf}")).await;
    assert_eq!(
        text_of(&html, "#skill-description"),
        "Reads and writes PDFs."
    );
    assert!(text_of(&html, "#skill-md-input").contains("Reads and writes PDFs."));

    // The SKILL.md editor checks before saving: a refusal, then warnings, then a save.
    let path = format!("/skills/{pdf}/skill-md");
    let res = browser
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("action", "check"),
                ("content", "no front matter"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!text_of(&res.text().await.unwrap(), "#skill-md-error").is_empty());
    let edited = "---\nname: pdf\ndescription: PDFs.\ncolour: blue\n---\n# PDF v2\n";
    let res = browser
        .post(
            &path,
            &[("csrf", &csrf), ("action", "check"), ("content", edited)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(
        text_of(&html, "#skill-md-warnings").contains("colour"),
        "{html}"
    );
    let res = browser
        .post(
            &path,
            &[("csrf", &csrf), ("action", "save"), ("content", edited)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = browser.page(&format!("/skills/{pdf}")).await;
    assert!(text_of(&html, "#skill-md-rendered").contains("PDF v2"));

    // Deactivate, then export.
    let res = browser
        .post(
            &format!("/skills/{pdf}/active"),
            &[("csrf", &csrf), ("is_active", "false")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = browser.page(&format!("/skills/{pdf}")).await;
    assert!(html.contains("id=\"skill-inactive\""));
    let res = browser.get(&format!("/skills/{pdf}/export")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/zip");

    // A token: shown once, with every snippet holding this server's URL and the token.
    let res = browser
        .post(
            "/tokens",
            &[
                ("csrf", &csrf),
                ("name", "laptop"),
                ("expires_in_days", "30"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let html = res.text().await.unwrap();
    let token = text_of(&html, "#token-value");
    assert!(token.starts_with("ask_live_"), "{token}");
    let doc = Html::parse_document(&html);
    let snippets: Vec<String> = doc
        .select(&Selector::parse("[data-testid=snippet]").unwrap())
        .map(|e| e.text().collect())
        .collect();
    assert!(snippets.len() >= 5);
    for snippet in &snippets {
        assert!(snippet.contains(&token), "{snippet}");
    }
    let url = format!("{}/mcp", app.base);
    assert!(text_of(&html, "#snippet-claude-code").contains(&format!(
        "claude mcp add --transport http agentskills {url}"
    )));
    for id in ["mcp-json", "vscode", "python", "typescript"] {
        assert!(
            text_of(&html, &format!("#snippet-{id}")).contains(&url),
            "{id}"
        );
    }
    assert_eq!(app.mcp_status(&token).await, StatusCode::OK);
    // The list shows it; the page never shows it again. Posted without the ticked box, it may
    // read only; the page's own form has the box ticked.
    let (_, html) = browser.page("/tokens").await;
    assert!(!html.contains(&token));
    assert_eq!(text_of(&html, "[data-testid=token-scopes]"), "skills:read");
    assert!(
        html.contains("name=\"allow_run\" value=\"on\" checked"),
        "{html}"
    );
    let doc = Html::parse_document(&html);
    let row = doc
        .select(&Selector::parse("[data-testid=token-row]").unwrap())
        .next()
        .unwrap();
    let token_id = row.value().attr("data-token-id").unwrap().to_owned();
    let res = browser
        .post(&format!("/tokens/{token_id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.mcp_status(&token).await, StatusCode::UNAUTHORIZED);
    let res = browser
        .post(
            "/tokens",
            &[("csrf", &csrf), ("name", "runner"), ("allow_run", "on")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let (_, html) = browser.page("/tokens").await;
    assert!(
        text_of(&html, "[data-testid=token-scopes]").contains("skills:read skills:run"),
        "{html}"
    );

    // Status: commands and quotas in words.
    let (status, html) = browser.page("/status").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!text_of(&html, "#status-sandbox").is_empty());
    assert!(text_of(&html, "#quota-bytes").contains("100 MiB"));

    // Deleting needs the skill's name typed.
    let delete = format!("/skills/{pdf}/delete");
    let res = browser
        .post(&delete, &[("csrf", &csrf), ("confirm", "nope")])
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text_of(&res.text().await.unwrap(), "#skill-delete-error").contains("pdf"));
    let res = browser
        .post(&delete, &[("csrf", &csrf), ("confirm", "pdf")])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (status, _) = browser.page(&format!("/skills/{pdf}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Sign out: the pages lead to the sign-in page again.
    let res = browser.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/signin?notice=signed-out");
    assert!(browser.session_cookie().is_none());
    for path in ["/skills", "/tokens", "/account", "/status"] {
        let res = browser.get(path).await;
        assert_eq!(location(&res), "/signin", "{path}");
    }
}

async fn session_cookies_are_httponly_samesite_and_secure_only_behind_a_trusted_https_proxy(
    backend: Backend,
) {
    // A direct client: no Secure (the request came over plain HTTP), whatever it claims.
    let app = spawn_app(backend.clone()).await;
    let mut browser = Browser::new(&app);
    browser
        .extra
        .push(("x-forwarded-proto", "https".to_owned()));
    let res = browser.get("/signin").await;
    let visitor = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(visitor.starts_with("agentskills_visitor="), "{visitor}");
    assert!(visitor.contains("HttpOnly") && visitor.contains("SameSite=Lax"));
    assert!(!visitor.contains("Secure"), "{visitor}");
    let res = browser.sign_up("plain").await;
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("agentskills_session="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attribute), "{attribute}: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");

    // Behind a trusted proxy that says HTTPS: Secure and the __Host- prefix, and forms must
    // come from the https origin.
    let app = spawn_app_with(backend, |s| {
        s.rate_limits.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let mut browser = Browser::new(&app);
    browser
        .extra
        .push(("x-forwarded-proto", "https".to_owned()));
    browser.origin = app.base.replace("http://", "https://");
    let res = browser.sign_up("secure").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("__Host-agentskills_session="),
        "{cookie}"
    );
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute}: {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    let (status, html) = browser.page("/skills").await;
    assert_eq!(status, StatusCode::OK);
    // The plain http origin is another site once the proxy says https.
    let csrf = csrf_of(&html);
    let res = browser
        .post_from(
            "/skills",
            &[("csrf", &csrf), ("name", "a"), ("description", "b")],
            Some(&app.base),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

async fn changes_need_the_csrf_token_and_this_sites_origin(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut browser = Browser::new(&app);
    browser.sign_up("guard").await;
    let csrf = browser.csrf("/skills").await;
    let create = |csrf: Option<&str>| {
        let mut fields = vec![
            ("name", "guarded".to_owned()),
            ("description", "Guarded.".to_owned()),
        ];
        if let Some(csrf) = csrf {
            fields.push(("csrf", csrf.to_owned()));
        }
        fields
    };
    let base = app.base.clone();
    // No token, a wrong one, another site's origin, no origin at all: refused, nothing made.
    let wrong = "0".repeat(64);
    for (fields, origin) in [
        (create(None), Some(base.as_str())),
        (create(Some(&wrong)), Some(base.as_str())),
        (create(Some("not-a-token")), Some(base.as_str())),
        (create(Some(&csrf)), Some("http://evil.example")),
        (create(Some(&csrf)), Some("null")),
        (create(Some(&csrf)), None),
    ] {
        let res = post_pairs(&mut browser, &fields, origin).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origin:?}");
        let html = res.text().await.unwrap();
        assert!(html.contains("id=\"error-page\""), "{html}");
    }
    let (_, html) = browser.page("/skills").await;
    assert!(html.contains("id=\"skills-empty\""));
    // Another browser's token does not fit this browser's session.
    let mut other = Browser::new(&app);
    other.sign_up("other").await;
    let theirs = other.csrf("/skills").await;
    let res = post_pairs(&mut browser, &create(Some(&theirs)), Some(&base)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // The right token from this origin (or, without Origin, this site's Referer) works.
    let res = post_pairs(&mut browser, &create(Some(&csrf)), Some(&base)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let mut fields = create(Some(&csrf));
    fields[0].1 = "second".to_owned();
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    let res = browser
        .client
        .post(format!("{base}/skills"))
        .header("cookie", browser.cookie_header())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("referer", format!("{base}/skills"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // The upload endpoint of the script: the header token and the origin are needed too.
    let files: &[(&str, &[u8])] = &[("SKILL.md", b"---\nname: up\ndescription: Up.\n---\n")];
    let res = browser.upload(None, files).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = browser.upload(Some(&wrong), files).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    browser.origin = "http://evil.example".to_owned();
    let res = browser.upload(Some(&csrf), files).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    browser.origin = base.clone();
    let res = browser.upload(Some(&csrf), files).await;
    assert_eq!(res.status(), StatusCode::CREATED);

    // Sign-in forms are bound to a visitor cookie: without it, or with another's token, refused.
    let mut stranger = Browser::new(&app);
    let res = stranger
        .post(
            "/signin",
            &[
                ("csrf", &csrf),
                ("login", "guard"),
                ("password", "guard-password-123"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let token = stranger.csrf("/signin").await;
    let res = stranger
        .post_from(
            "/signin",
            &[
                ("csrf", &token),
                ("login", "guard"),
                ("password", "guard-password-123"),
            ],
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = stranger
        .post(
            "/signin",
            &[
                ("csrf", &token),
                ("login", "guard"),
                ("password", "guard-password-123"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // A changed Host is not this server (DNS rebinding) and never reaches a page.
    let res = browser
        .client
        .get(format!("{base}/signin"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

async fn every_page_has_the_security_headers_and_stays_small(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut browser = Browser::new(&app);
    let mut pages = vec!["/signin".to_owned(), "/signup".to_owned()];
    // Each page signed out first (the sign-in and sign-up pages), then signed in.
    for path in pages.clone() {
        check_page(&mut browser, &path, StatusCode::OK).await;
    }
    browser.sign_up("headers").await;
    let csrf = browser.csrf("/skills").await;
    let files: &[(&str, &[u8])] = &[
        (
            "SKILL.md",
            b"---\nname: h\ndescription: Headers.\n---\n# H\n",
        ),
        ("notes.txt", b"one\ntwo\n"),
    ];
    let res = browser.upload(Some(&csrf), files).await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    browser
        .post("/tokens", &[("csrf", &csrf), ("name", "t")])
        .await;
    pages = vec![
        "/skills".to_owned(),
        "/skills?search=zzz".to_owned(),
        format!("/skills/{id}"),
        format!("/skills/{id}?file=notes.txt"),
        "/tokens".to_owned(),
        "/account".to_owned(),
        "/status".to_owned(),
    ];
    for path in &pages {
        check_page(&mut browser, path, StatusCode::OK).await;
    }
    // Error pages and redirects carry them too.
    check_page(
        &mut browser,
        &format!("/skills/{}", uuid::Uuid::new_v4()),
        StatusCode::NOT_FOUND,
    )
    .await;
    let res = browser.get("/").await;
    assert_headers(res.headers(), "/");
    // Assets: long-cached under hashed names, with an ETag that answers 304.
    let (_, html) = browser.page("/skills").await;
    for asset in assets_of(&html) {
        let res = browser.get(&asset).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        let res = browser
            .client
            .get(format!("{}{asset}", app.base))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    }
    let res = browser.get("/assets/console.0000000000000000.js").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

fn assert_headers(headers: &HeaderMap, path: &str) {
    assert_eq!(headers["content-security-policy"], CSP, "{path}");
    assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    assert_eq!(headers["referrer-policy"], "same-origin", "{path}");
    assert_eq!(headers["x-frame-options"], "DENY", "{path}");
}

/// The `src` of the page's scripts and the `href` of its stylesheets.
fn assets_of(html: &str) -> Vec<String> {
    let doc = Html::parse_document(html);
    let mut assets: Vec<String> = doc
        .select(&Selector::parse("script[src]").unwrap())
        .filter_map(|e| e.value().attr("src").map(str::to_owned))
        .collect();
    assets.extend(
        doc.select(&Selector::parse("link[rel=stylesheet]").unwrap())
            .filter_map(|e| e.value().attr("href").map(str::to_owned)),
    );
    assets
}

/// Renders a page once: its status, headers, no inline script or handler, and a first load
/// (the HTML with its stylesheet and script) under 150 KB.
async fn check_page(browser: &mut Browser, path: &str, status: StatusCode) {
    let res = browser.get(path).await;
    assert_eq!(res.status(), status, "{path}");
    assert_headers(res.headers(), path);
    let html = res.text().await.unwrap();
    let doc = Html::parse_document(&html);
    for script in doc.select(&Selector::parse("script").unwrap()) {
        let src = script.value().attr("src").unwrap_or_default();
        assert!(
            src.starts_with("/assets/"),
            "{path}: an inline or outside script"
        );
        assert!(script.text().collect::<String>().trim().is_empty());
    }
    assert!(
        doc.select(&Selector::parse("style").unwrap())
            .next()
            .is_none()
    );
    let mut total = html.len();
    for asset in assets_of(&html) {
        total += browser.get(&asset).await.bytes().await.unwrap().len();
    }
    assert!(
        total < 150 * 1024,
        "{path}: the first load is {total} bytes"
    );
}

async fn signing_out_changing_the_password_and_signing_out_everywhere_end_browser_sessions(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    // Sign out ends this browser's session on the server: its old cookie is refused.
    let mut one = Browser::new(&app);
    one.sign_up("ender").await;
    let old = one.session_cookie().unwrap();
    let csrf = one.csrf("/skills").await;
    one.post("/signout", &[("csrf", &csrf)]).await;
    one.cookies.insert("agentskills_session".into(), old);
    let res = one.get("/skills").await;
    assert_eq!(location(&res), "/signin");
    // ... and the stale cookie is cleared.
    assert!(one.session_cookie().is_none());

    // Sign out everywhere ends every browser, and the API's logins too.
    let password = "ender-password-123";
    let mut a = Browser::new(&app);
    let mut b = Browser::new(&app);
    a.sign_in("ender", password).await;
    b.sign_in("ender@example.com", password).await;
    let api = app
        .login("ender", password)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let access = api["access_token"].as_str().unwrap().to_owned();
    let csrf = a.csrf("/account").await;
    let res = a
        .post("/signout", &[("csrf", &csrf), ("everywhere", "1")])
        .await;
    assert_eq!(location(&res), "/signin?notice=signed-out-everywhere");
    assert_eq!(location(&b.get("/skills").await), "/signin");
    assert_eq!(
        app.get_auth("/api/v1/users/me", &access).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A password change ends every browser session, the one that changed it too.
    let mut c = Browser::new(&app);
    let mut d = Browser::new(&app);
    c.sign_in("ender", password).await;
    d.sign_in("ender", password).await;
    let old = c.session_cookie().unwrap();
    let csrf = c.csrf("/account").await;
    // A wrong current password: the message next to its field, nothing ended.
    let res = c
        .post(
            "/account/password",
            &[
                ("csrf", &csrf),
                ("current_password", "not it at all"),
                ("new_password", "a new long password"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(!text_of(&res.text().await.unwrap(), "#password-current-error").is_empty());
    assert_eq!(d.get("/skills").await.status(), StatusCode::OK);
    let res = c
        .post(
            "/account/password",
            &[
                ("csrf", &csrf),
                ("current_password", password),
                ("new_password", "a new long password"),
            ],
        )
        .await;
    assert_eq!(location(&res), "/signin?notice=password-changed");
    c.cookies.insert("agentskills_session".into(), old);
    assert_eq!(location(&c.get("/skills").await), "/signin");
    assert_eq!(location(&d.get("/skills").await), "/signin");
    // The new password signs in.
    let res = c.sign_in("ender", "a new long password").await;
    assert_eq!(location(&res), "/skills");
    assert_eq!(c.get("/skills").await.status(), StatusCode::OK);

    // Deleting the account (the confirmation typed) ends it all.
    let csrf = c.csrf("/account").await;
    let res = c
        .post(
            "/account/delete",
            &[
                ("csrf", &csrf),
                ("password", "a new long password"),
                ("confirm", "delete"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!text_of(&res.text().await.unwrap(), "#delete-confirm-error").is_empty());
    let res = c
        .post(
            "/account/delete",
            &[
                ("csrf", &csrf),
                ("password", "a new long password"),
                ("confirm", "DELETE MY ACCOUNT"),
            ],
        )
        .await;
    assert_eq!(location(&res), "/signin?notice=account-deleted");
    let res = c.sign_in("ender", "a new long password").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

async fn sign_in_is_limited_and_hashed_like_the_api_login(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.rate_limits.login_per_account_per_minute = 3;
        s.rate_limits.login_per_ip_per_minute = 100;
    })
    .await;
    let mut browser = Browser::new(&app);
    browser.sign_up("limited").await;
    let mut guesser = Browser::new(&app);
    // The sign-up's own sign-in counted once; two more guesses, by user name and by email
    // (in another case), and the account's allowance is spent.
    for login in ["limited", "LIMITED@example.com"] {
        let res = guesser.sign_in(login, "wrong password").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{login}");
        let html = res.text().await.unwrap();
        assert!(text_of(&html, "#signin-error").contains("wrong email, username or password"));
        // What was typed stays, the password does not.
        assert!(html.contains(&format!("value=\"{login}\"")));
        assert!(!html.contains("wrong password\""));
    }
    let res = guesser
        .sign_in("limited@example.com", "wrong password")
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert!(
        text_of(&res.text().await.unwrap(), "#signin-error").contains("logins to this account")
    );
    // The API's login draws on the same allowance, even with the right password.
    let res = app.login("limited", "limited-password-123").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another account is not affected.
    let mut other = Browser::new(&app);
    assert_eq!(other.sign_up("free").await.status(), StatusCode::SEE_OTHER);
}

async fn a_hostile_skill_md_is_rendered_with_nothing_that_runs(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut browser = Browser::new(&app);
    browser.sign_up("victim").await;
    let csrf = browser.csrf("/skills").await;
    let hostile = concat!(
        "---\n",
        "name: hostile\n",
        "description: \"<img src=x onerror=alert(1)><script>alert(2)</script>\"\n",
        "---\n",
        "# Hello <script>alert(3)</script>\n\n",
        "<script>alert(4)</script>\n\n",
        "<img src=x onerror=\"alert(5)\">\n\n",
        "[click me](javascript:alert(6)) and [data](data:text/html;base64,PHNjcmlwdD4=)\n\n",
        "<a href=\"jAvAsCrIpT:alert(7)\" onclick=\"alert(8)\">link</a>\n\n",
        "<div onmouseover=\"alert(9)\" style=\"position:fixed\">over</div>\n\n",
        "<iframe src=\"https://evil.example\"></iframe>\n\n",
        "<svg onload=alert(10)><script>alert(11)</script></svg>\n\n",
        "<form action=\"https://evil.example\"><button formaction=\"javascript:alert(12)\">x</button></form>\n\n",
        "<object data=\"x\"></object><embed src=\"x\"><meta http-equiv=\"refresh\" content=\"0;url=https://evil.example\">\n\n",
        "<base href=\"https://evil.example/\">\n",
    );
    let res = browser
        .upload(Some(&csrf), &[("SKILL.md", hostile.as_bytes())])
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        format!("/skills/{id}"),
        "/skills".to_owned(),
        "/skills?search=hostile".to_owned(),
    ] {
        let (status, html) = browser.page(&path).await;
        assert_eq!(status, StatusCode::OK);
        assert_harmless(&html, &path);
    }
    // The description is shown as the text it is.
    let (_, html) = browser.page(&format!("/skills/{id}")).await;
    assert!(text_of(&html, "#skill-description").contains("<script>alert(2)</script>"));
    // The rendered body keeps its words.
    assert!(text_of(&html, "#skill-md-rendered").contains("Hello"));
}

/// Parses a page and fails on anything that could run or load from elsewhere.
fn assert_harmless(html: &str, path: &str) {
    let doc = Html::parse_document(html);
    let all = Selector::parse("*").unwrap();
    for element in doc.select(&all) {
        let name = element.value().name();
        assert!(
            !["iframe", "object", "embed", "img", "svg", "style", "base"].contains(&name),
            "{path}: a <{name}> survived"
        );
        if name == "script" {
            let src = element.value().attr("src").unwrap_or_default();
            assert!(src.starts_with("/assets/"), "{path}: a script survived");
        }
        if name == "meta" {
            assert!(
                element.value().attr("http-equiv").is_none(),
                "{path}: a meta refresh survived"
            );
        }
        if name == "form" {
            let action = element.value().attr("action").unwrap_or_default();
            assert!(
                action.starts_with('/'),
                "{path}: a form to {action} survived"
            );
        }
        for (attribute, value) in element.value().attrs() {
            assert!(
                !attribute.to_ascii_lowercase().starts_with("on"),
                "{path}: <{name} {attribute}> survived"
            );
            assert!(attribute != "style", "{path}: a style attribute survived");
            let value = value.trim().to_ascii_lowercase();
            assert!(
                !value.starts_with("javascript:") && !value.starts_with("data:"),
                "{path}: <{name} {attribute}={value}> survived"
            );
            assert!(attribute != "formaction", "{path}: formaction survived");
        }
    }
}

async fn skill_files_are_never_served_as_html(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut browser = Browser::new(&app);
    browser.sign_up("files").await;
    let csrf = browser.csrf("/skills").await;
    let page = b"<!doctype html><script>alert(document.cookie)</script>";
    let res = browser
        .upload(
            Some(&csrf),
            &[
                ("SKILL.md", b"---\nname: files\ndescription: Files.\n---\n"),
                ("page.html", page),
                (
                    "image.svg",
                    b"<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>",
                ),
                ("blob.bin", &[0xff, 0xfe, 0x00, 0x01]),
            ],
        )
        .await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in ["page.html", "image.svg", "SKILL.md"] {
        let res = browser.get(&format!("/skills/{id}/files/{name}")).await;
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        assert_eq!(
            res.headers()["content-type"],
            "text/plain; charset=utf-8",
            "{name}"
        );
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert_eq!(
            res.headers()["content-security-policy"],
            "default-src 'none'; sandbox",
            "{name}"
        );
        let res = browser
            .get(&format!("/skills/{id}/files/{name}?download=1"))
            .await;
        assert_eq!(res.headers()["content-type"], "application/octet-stream");
        assert!(
            res.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment"),
            "{name}"
        );
    }
    let res = browser.get(&format!("/skills/{id}/files/blob.bin")).await;
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    // The page shows the HTML file as text, escaped, line by line.
    let (_, html) = browser.page(&format!("/skills/{id}?file=page.html")).await;
    assert_eq!(
        text_of(&html, "#file-lines li"),
        String::from_utf8_lossy(page)
    );
    assert_harmless(&html, "page.html");
    let (_, html) = browser.page(&format!("/skills/{id}?file=blob.bin")).await;
    assert!(text_of(&html, "#file-unshown").contains("not text"));
    // Another user's skill is not found, its files neither.
    let mut other = Browser::new(&app);
    other.sign_up("nosy").await;
    assert_eq!(
        other.get(&format!("/skills/{id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        other
            .get(&format!("/skills/{id}/files/page.html"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

/// `docs/a b#c.md`: the file tree's link, the page of the file, its plain-text and download
/// links (the path percent-encoded segment by segment: a space is `%20`, never a form's `+`, and
/// `#` is `%23`), and `SKILL.md`'s relative links to it.
async fn a_file_whose_path_needs_percent_encoding_opens_and_its_links_work(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut browser = Browser::new(&app);
    browser.sign_up("encoder").await;
    let csrf = browser.csrf("/skills").await;
    let notes = b"Notes on CSV dialects.\nSemicolons are common.\n";
    let skill_md = concat!(
        "---\nname: odd-paths\ndescription: Files with odd names.\n---\n",
        "Read [the notes](docs/a%20b%23c.md), [again](./docs/x/../a%20b%23c.md) ",
        "and [nothing](docs/missing.md).\n",
    );
    let res = browser
        .upload(
            Some(&csrf),
            &[
                ("SKILL.md", skill_md.as_bytes()),
                ("docs/a b#c.md", notes),
                ("docs/50%+c?d.txt", b"percent\n"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, html) = browser.page(&format!("/skills/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let doc = Html::parse_document(&html);
    let attr = |selector: &str, name: &str| -> Vec<String> {
        let sel = Selector::parse(selector).unwrap();
        doc.select(&sel)
            .filter_map(|e| e.value().attr(name).map(str::to_owned))
            .collect()
    };
    let page_of_notes = format!("/skills/{id}?file=docs%2Fa+b%23c.md");
    assert!(
        attr("[data-testid=file-link]", "href").contains(&page_of_notes),
        "{html}"
    );
    // SKILL.md's links to the file open its page; the one to a missing file goes nowhere.
    assert_eq!(
        attr("#skill-md-rendered a", "href"),
        [page_of_notes.clone(), page_of_notes.clone()]
    );
    assert!(text_of(&html, "#skill-md-rendered").contains("nothing"));
    for (path, body) in [
        ("docs/a b#c.md", &notes[..]),
        ("docs/50%+c?d.txt", &b"percent\n"[..]),
    ] {
        let (status, html) = browser
            .page(&format!(
                "/skills/{id}?file={}",
                form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert_eq!(text_of(&html, "#file-path"), path);
        assert_eq!(
            text_of(&html, "#file-lines li"),
            String::from_utf8_lossy(body).trim_end()
        );
        let doc = Html::parse_document(&html);
        let href = |selector: &str| {
            let sel = Selector::parse(selector).unwrap();
            doc.select(&sel)
                .next()
                .and_then(|a| a.value().attr("href"))
                .unwrap()
                .to_owned()
        };
        let raw = href("#file-raw");
        let want = match path {
            "docs/a b#c.md" => format!("/skills/{id}/files/docs/a%20b%23c.md"),
            _ => format!("/skills/{id}/files/docs/50%25%2Bc%3Fd.txt"),
        };
        assert_eq!(raw, want);
        assert_eq!(href("#file-download"), format!("{want}?download=1"));
        for link in [raw, href("#file-download")] {
            let res = browser.get(&link).await;
            assert_eq!(res.status(), StatusCode::OK, "{link}");
            assert_eq!(res.bytes().await.unwrap(), body, "{link}");
        }
    }
}

/// With `server.public_url`, the snippets use it, and forms must come from its origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_url_is_what_clients_and_forms_use() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.public_url = Some("https://skills.example.com/".into());
    })
    .await;
    let mut browser = Browser::new(&app);
    browser.origin = "https://skills.example.com".into();
    assert_eq!(
        browser.sign_up("public").await.status(),
        StatusCode::SEE_OTHER
    );
    let csrf = browser.csrf("/tokens").await;
    let res = browser
        .post("/tokens", &[("csrf", &csrf), ("name", "ci")])
        .await;
    let html = res.text().await.unwrap();
    assert!(text_of(&html, "#snippet-claude-code").contains("https://skills.example.com/mcp"));
    assert!(text_of(&html, "#mcp-url").contains("https://skills.example.com/mcp"));
    let res = browser
        .post_from(
            "/tokens",
            &[("csrf", &csrf), ("name", "x")],
            Some(&app.base),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

async fn the_list_pages_searches_and_says_what_to_do_when_empty(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut browser = Browser::new(&app);
    browser.sign_up("pager").await;
    let csrf = browser.csrf("/skills").await;
    // 23 skills: two pages of 20 and 3.
    for i in 0..23 {
        let name = format!("skill-{i:02}");
        let description = if i % 10 == 7 {
            "Mentions seven."
        } else {
            "Plain."
        };
        let res = browser
            .post(
                "/skills",
                &[
                    ("csrf", &csrf),
                    ("name", &name),
                    ("description", description),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{name}");
    }
    let rows = |html: &str| {
        let doc = Html::parse_document(html);
        doc.select(&Selector::parse("[data-testid=skill-row]").unwrap())
            .map(|e| e.value().attr("data-skill-name").unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let (_, html) = browser.page("/skills").await;
    assert_eq!(rows(&html).len(), 20);
    assert!(text_of(&html, "#skills-pager").contains("Page 1 of 2"));
    let doc = Html::parse_document(&html);
    let next = doc
        .select(&Selector::parse("#skills-next").unwrap())
        .next()
        .unwrap()
        .value()
        .attr("href")
        .unwrap()
        .to_owned();
    let (_, html) = browser.page(&next).await;
    assert_eq!(rows(&html), ["skill-20", "skill-21", "skill-22"]);
    assert!(html.contains("id=\"skills-prev\""));
    // Search matches names and descriptions, case-insensitively.
    let (_, html) = browser.page("/skills?search=SEVEN").await;
    assert_eq!(rows(&html), ["skill-07", "skill-17"]);
    assert!(!html.contains("id=\"skills-pager\""));
    // No match: a way back to every skill.
    let (_, html) = browser.page("/skills?search=nothing-like-it").await;
    assert!(html.contains("id=\"skills-no-match\""));
    assert!(html.contains("href=\"/skills\" id=\"skills-clear-search\""));
}

/// The version a form of the page was opened on (its hidden `version` field).
fn form_version(html: &str, form: &str) -> String {
    let doc = Html::parse_document(html);
    let sel = Selector::parse(&format!("#{form} input[name=version]")).unwrap();
    doc.select(&sel)
        .next()
        .and_then(|i| i.value().attr("value"))
        .unwrap()
        .to_owned()
}

/// Two tabs on one skill: what the second saves after the first has saved is refused with the
/// typed text kept (no lost update), and saves once the person has seen the newer version.
async fn the_editors_save_only_onto_the_version_they_show(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_up("ann").await.status(), StatusCode::SEE_OTHER);
    let csrf = browser.csrf("/skills").await;
    let zip = zip_of(&[(
        "SKILL.md",
        b"---\nname: pdf\ndescription: Work with PDF files.\n---\n# PDF\n",
    )]);
    let res = browser.upload(Some(&csrf), &[("pdf.zip", &zip)]).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let pdf = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Both tabs open the page on version 1.
    let (_, first_tab) = browser.page(&format!("/skills/{pdf}")).await;
    let (_, second_tab) = browser.page(&format!("/skills/{pdf}")).await;
    assert_eq!(text_of(&first_tab, "#skill-version"), "1");
    for html in [&first_tab, &second_tab] {
        assert_eq!(form_version(html, "description-form"), "1");
        assert_eq!(form_version(html, "skill-md-form"), "1");
    }
    // Deactivating is no edit of the text: the editors still save onto version 1 after it.
    let res = browser
        .post(
            &format!("/skills/{pdf}/active"),
            &[("csrf", &csrf), ("is_active", "false")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = browser
        .post(
            &format!("/skills/{pdf}/description"),
            &[
                ("csrf", &csrf),
                ("version", "1"),
                ("description", "Second tab's words."),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // The first tab saves what it typed onto version 1: refused, kept, nothing changed.
    let res = browser
        .post(
            &format!("/skills/{pdf}/description"),
            &[
                ("csrf", &csrf),
                ("version", "1"),
                ("description", "First tab's words."),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    let html = res.text().await.unwrap();
    assert!(
        text_of(&html, "#description-error").contains("changed since this page was opened"),
        "{html}"
    );
    assert_eq!(text_of(&html, "#description-input"), "First tab's words.");
    assert_eq!(text_of(&html, "#skill-description"), "Second tab's words.");
    assert_eq!(form_version(&html, "description-form"), "2");
    let edited = "---\nname: pdf\ndescription: First tab's SKILL.md.\n---\n# PDF\n";
    let res = browser
        .post(
            &format!("/skills/{pdf}/skill-md"),
            &[
                ("csrf", &csrf),
                ("version", "1"),
                ("action", "save"),
                ("content", edited),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    let html = res.text().await.unwrap();
    assert!(
        text_of(&html, "#skill-md-error").contains("changed since this page was opened"),
        "{html}"
    );
    assert_eq!(text_of(&html, "#skill-md-input"), edited);
    let (_, html) = browser.page(&format!("/skills/{pdf}")).await;
    assert_eq!(text_of(&html, "#skill-version"), "2");
    assert_eq!(text_of(&html, "#skill-description"), "Second tab's words.");

    // Having seen version 2, the first tab saves onto it.
    let res = browser
        .post(
            &format!("/skills/{pdf}/skill-md"),
            &[
                ("csrf", &csrf),
                ("version", "2"),
                ("action", "save"),
                ("content", edited),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = browser.page(&format!("/skills/{pdf}")).await;
    assert_eq!(text_of(&html, "#skill-version"), "3");
    assert_eq!(
        text_of(&html, "#skill-description"),
        "First tab's SKILL.md."
    );
}

async fn a_repository_is_imported_and_synced_from_the_console(backend: Backend) {
    let app =
        crate::helpers::spawn_app_with(backend, |s| s.import.allow_private_hosts = true).await;
    let repo = crate::git_server::Repo::new("console-skills");
    repo.write(
        "skills/pdf/SKILL.md",
        b"---\nname: pdf-tools\ndescription: PDF forms.\n---\nOne.\n",
    );
    repo.commit("one");
    repo.publish();
    let server = crate::git_server::GitHttp::start(&repo.root).await;
    let mut browser = Browser::new(&app);
    browser.sign_up("importer").await;
    let csrf = browser.csrf("/skills").await;

    // Needs the CSRF token like every form: nothing is fetched without it.
    let res = browser
        .post("/skills/import", &[("url", server.url(&repo).as_str())])
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(server.requests(), 0);

    // A mistake is said next to its field, with what was typed kept.
    let res = browser
        .post(
            "/skills/import",
            &[
                ("csrf", csrf.as_str()),
                ("url", "ftp://example.com/x"),
                ("ref", "a..b"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(
        text_of(&html, "#import-url-error").contains("https"),
        "{html}"
    );
    assert!(!text_of(&html, "#import-ref-error").is_empty(), "{html}");
    assert!(html.contains("value=\"ftp://example.com/x\""), "{html}");

    let res = browser
        .post(
            "/skills/import",
            &[
                ("csrf", csrf.as_str()),
                ("url", server.url(&repo).as_str()),
                ("path", "skills"),
            ],
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{}",
        res.text().await.unwrap()
    );
    let to = location(&res);
    let (_, html) = browser.page(&to).await;
    assert!(html.contains("1 skill is imported"), "{html}");
    let id = skill_id_in(&html);

    let (status, html) = browser.page(&format!("/skills/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text_of(&html, "#source-url"), server.url(&repo));
    assert_eq!(text_of(&html, "#source-path"), "skills/pdf");
    assert!(html.contains("id=\"skill-sync-form\""), "{html}");

    // Sync now: nothing changed; then a change upstream makes a version.
    let res = browser
        .post(&format!("/skills/{id}/sync"), &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = browser.page(&location(&res)).await;
    assert!(html.contains("nothing changed"), "{html}");
    repo.write(
        "skills/pdf/SKILL.md",
        b"---\nname: pdf-tools\ndescription: PDF forms.\n---\nTwo.\n",
    );
    repo.commit("two");
    repo.publish();
    let res = browser
        .post(&format!("/skills/{id}/sync"), &[("csrf", csrf.as_str())])
        .await;
    let (_, html) = browser.page(&location(&res)).await;
    assert!(html.contains("a new version holds"), "{html}");

    // Changed by hand: the page says so, and a sync without force is refused on the page.
    let version = form_version(&html, "skill-md-form");
    let res = browser
        .post(
            &format!("/skills/{id}/skill-md"),
            &[
                ("csrf", csrf.as_str()),
                ("version", version.as_str()),
                ("action", "save"),
                (
                    "content",
                    "---\nname: pdf-tools\ndescription: PDF forms.\n---\nMine.\n",
                ),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = browser.page(&format!("/skills/{id}")).await;
    assert!(html.contains("id=\"source-changed-by-hand\""), "{html}");
    let res = browser
        .post(&format!("/skills/{id}/sync"), &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let html = res.text().await.unwrap();
    assert!(
        text_of(&html, "#skill-sync-error").contains("force"),
        "{html}"
    );
    let res = browser
        .post(
            &format!("/skills/{id}/sync"),
            &[("csrf", csrf.as_str()), ("force", "true")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // The periodic sync's interval.
    let res = browser
        .post(
            &format!("/skills/{id}/source"),
            &[("csrf", csrf.as_str()), ("sync_interval_hours", "soon")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = browser
        .post(
            &format!("/skills/{id}/source"),
            &[("csrf", csrf.as_str()), ("sync_interval_hours", "12")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = browser.page(&format!("/skills/{id}")).await;
    assert!(html.contains("value=\"12\""), "{html}");
}
