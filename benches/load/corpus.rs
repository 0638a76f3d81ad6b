//! The generated corpus: users with API tokens, each with skills shaped like real ones (a
//! `SKILL.md` with front matter and a few KB of instructions, a reference document, a script),
//! all made through the REST API.

use std::fmt::Write as _;
use std::io::Write as _;

/// A user of the corpus: their access token (REST) and API token (MCP).
#[derive(Clone)]
pub(crate) struct User {
    pub(crate) api_token: String,
}

/// The name of skill `i`.
pub(crate) fn skill_name(i: usize) -> String {
    format!("skill-{i:03}")
}

fn skill_md(name: &str, i: usize) -> String {
    let topics = [
        "PDF forms",
        "spreadsheets",
        "slide decks",
        "release notes",
        "SQL migrations",
    ];
    let topic = topics[i % topics.len()];
    let mut text = format!(
        "---\nname: {name}\ndescription: >\n  Works with {topic}: extracts, fills in and checks them. Use when the user\n  asks about {topic} or gives you one to change.\nlicense: Apache-2.0\nmetadata:\n  author: bench\n  version: \"1.{i}\"\n---\n# {name}\n\n## When to use\n\nUse this skill for {topic}.\n\n## Steps\n\n"
    );
    for step in 1..=12 {
        let _ = writeln!(
            text,
            "{step}. Read `references/guide.md` for the rules of step {step}, then run `python3 scripts/run.py --step {step}` and check its output against the expected shape before going on."
        );
    }
    text.push_str("\n## Notes\n\nKeep the user's original file; write results next to it.\n");
    text
}

fn multipart(name: &str, i: usize) -> Vec<u8> {
    let files = [
        ("SKILL.md", skill_md(name, i)),
        (
            "references/guide.md",
            format!(
                "# Guide for {name}\n\n{}",
                "A rule of the format, with an example.\n".repeat(40)
            ),
        ),
        (
            "scripts/run.py",
            "import sys\nprint('step', sys.argv[-1])\n".to_owned(),
        ),
    ];
    let mut body = Vec::new();
    for (path, content) in files {
        let _ = write!(
            body,
            "--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path}\"\r\n\r\n{content}\r\n"
        );
    }
    body.extend_from_slice(b"--b--\r\n");
    body
}

/// The subjects and actions of the search corpus: every subject with every action is a skill.
const SUBJECTS: [(&str, &str); 30] = [
    ("pdf", "PDF documents, their pages and forms"),
    ("spreadsheet", "Excel spreadsheets, workbooks and formulas"),
    ("postgres", "PostgreSQL databases, tables and queries"),
    ("kubernetes", "Kubernetes clusters, pods and deployments"),
    ("docker", "Docker containers, images and volumes"),
    ("git", "Git repositories, branches and commits"),
    ("invoice", "supplier invoices, line items and totals"),
    ("email", "email newsletters, subscribers and campaigns"),
    ("image", "photographs, thumbnails and resolutions"),
    ("audio", "podcast audio, episodes and transcripts"),
    (
        "localization",
        "product translations, locales and glossaries",
    ),
    (
        "security",
        "web application security headers and dependencies",
    ),
    ("terraform", "Terraform modules, state files and providers"),
    ("slides", "presentation slides, decks and speaker notes"),
    ("calendar", "team calendars, meetings and time zones"),
    ("recipe", "cooking recipes, ingredients and portions"),
    ("legal", "legal contracts, clauses and obligations"),
    ("finance", "quarterly budgets, expenses and forecasts"),
    ("seo", "website keywords, sitemaps and backlinks"),
    ("api", "REST APIs, endpoints and OpenAPI specs"),
    ("logs", "server logs, errors and traces"),
    ("weather", "weather forecasts, temperatures and rainfall"),
    ("genomics", "DNA sequencing reads and variants"),
    ("resume", "job resumes and cover letters"),
    ("chess", "chess games, openings and positions"),
    ("music", "sheet music, chords and melodies"),
    ("maps", "geographic maps, coordinates and routes"),
    ("support", "customer support tickets and escalations"),
    ("social", "social media posts, captions and hashtags"),
    ("research", "academic papers, citations and abstracts"),
];
const ACTIONS: [(&str, &str); 10] = [
    (
        "summarize",
        "Summarize {}: condense them into a short summary with the key points.",
    ),
    (
        "validate",
        "Validate {}: check them for errors and inconsistencies.",
    ),
    (
        "convert",
        "Convert {} between formats and keep the originals.",
    ),
    (
        "backup",
        "Back up and restore {} on a schedule and verify the copies.",
    ),
    ("generate", "Generate new {} from a brief and templates."),
    (
        "audit",
        "Audit {} against a checklist and report the findings.",
    ),
    (
        "migrate",
        "Migrate {} to a new version or platform with a rollback plan.",
    ),
    ("visualize", "Visualize {} as charts and highlight trends."),
    (
        "extract",
        "Extract structured data from {} into JSON or CSV.",
    ),
    ("optimize", "Optimize {} for speed and size."),
];

/// Queries the search scenario asks in turns, as an agent would word them.
pub(crate) const SEARCH_QUERIES: [&str; 8] = [
    "summarize a long PDF document",
    "back up the postgres database",
    "make docker images smaller",
    "extract line items from supplier invoices",
    "visualize quarterly budget",
    "migrate git repositories",
    "audit legal contract obligations",
    "convert recipe portions",
];

/// The search corpus' skill `i` (0..300): its name and `SKILL.md`, a few KB like the others.
pub(crate) fn search_skill(i: usize) -> (String, String) {
    let (subject, words) = SUBJECTS[i / ACTIONS.len() % SUBJECTS.len()];
    let (action, description) = ACTIONS[i % ACTIONS.len()];
    let name = format!("{subject}-{action}");
    let description = description.replace("{}", words);
    let neighbour = SUBJECTS[(i / ACTIONS.len() + 7) % SUBJECTS.len()].1;
    let mut text = format!(
        "---\nname: {name}\ndescription: {description}\n---\n# {name}\n\nUse this skill to {action} {words}.\n\n## Steps\n\n"
    );
    for step in 1..=12 {
        let _ = writeln!(
            text,
            "{step}. Look at the {words} again for step {step}, note what changed, and keep the user's originals beside the results."
        );
    }
    let _ = writeln!(
        text,
        "\n## Notes\n\nThe same approach works for {neighbour}."
    );
    (name, text)
}

/// Registers `username` with the 300 skills of the search corpus, uploaded one by one; returns
/// the user and each upload's time.
pub(crate) async fn search_user(
    client: &reqwest::Client,
    base: &str,
    username: &str,
) -> (User, Vec<std::time::Duration>) {
    let access = super::support::register_and_login_as(client, base, username).await;
    let mut times = Vec::with_capacity(300);
    for i in 0..300 {
        let (name, text) = search_skill(i);
        let mut body = Vec::new();
        let _ = write!(
            body,
            "--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"SKILL.md\"\r\n\r\n{text}\r\n--b--\r\n"
        );
        let started = std::time::Instant::now();
        let res = client
            .post(format!("{base}/api/v1/skills/upload"))
            .bearer_auth(&access)
            .header("content-type", "multipart/form-data; boundary=b")
            .body(body)
            .send()
            .await
            .expect("upload");
        times.push(started.elapsed());
        assert_eq!(res.status(), 201, "upload {name} for {username}");
    }
    let api_token = super::support::api_token(client, base, &access).await;
    (User { api_token }, times)
}

/// Registers `username`, logs in, uploads `skills` skills and creates an API token.
pub(crate) async fn user(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    skills: usize,
) -> User {
    let access = super::support::register_and_login_as(client, base, username).await;
    for i in 0..skills {
        let name = skill_name(i);
        let res = client
            .post(format!("{base}/api/v1/skills/upload"))
            .bearer_auth(&access)
            .header("content-type", "multipart/form-data; boundary=b")
            .body(multipart(&name, i))
            .send()
            .await
            .expect("upload");
        assert_eq!(res.status(), 201, "upload {name} for {username}");
    }
    let api_token = super::support::api_token(client, base, &access).await;
    User { api_token }
}

/// The main user (`skills` skills) and `others` more users with `others_skills` each, made two
/// at a time (each login hashes a password at the default cost, two at a time on this machine).
pub(crate) async fn build(
    client: &reqwest::Client,
    base: &str,
    skills: usize,
    others: usize,
    others_skills: usize,
) -> (User, Vec<User>) {
    let main = user(client, base, "bench", skills).await;
    let mut set = tokio::task::JoinSet::new();
    let two = std::sync::Arc::new(tokio::sync::Semaphore::new(2));
    for n in 0..others {
        let client = client.clone();
        let base = base.to_owned();
        let two = std::sync::Arc::clone(&two);
        set.spawn(async move {
            let _turn = two.acquire().await.expect("the semaphore stays open");
            user(&client, &base, &format!("user{n:03}"), others_skills).await
        });
    }
    let others = set.join_all().await;
    (main, others)
}

/// The `content` of `<meta name="csrf-token">` on a console page.
fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf-token\" content=\"";
    let start = html.find(marker).expect("a console page has a CSRF token") + marker.len();
    let end = html[start..].find('"').expect("the token's quote closes");
    html[start..start + end].to_owned()
}

/// The `name=value` of every cookie a response sets, appended to `jar`.
fn keep_cookies(jar: &mut Vec<String>, res: &reqwest::Response) {
    for value in res.headers().get_all("set-cookie") {
        let pair = value
            .to_str()
            .expect("ASCII cookies")
            .split(';')
            .next()
            .unwrap_or("");
        let name = pair.split('=').next().unwrap_or("");
        jar.retain(|c| !c.starts_with(&format!("{name}=")));
        jar.push(pair.to_owned());
    }
}

/// An OAuth access token of `username` for `/mcp`, got the way an app gets one: dynamic
/// registration, the console's sign-in and consent forms, and the token endpoint with PKCE.
pub(crate) async fn oauth_token(base: &str, username: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let redirect = "http://127.0.0.1:9/callback";
    let registered: serde_json::Value = client
        .post(format!("{base}/oauth/register"))
        .json(&serde_json::json!({"client_name": "load harness", "redirect_uris": [redirect]}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("a registration");
    let client_id = registered["client_id"]
        .as_str()
        .expect("a client_id")
        .to_owned();
    let mut jar = Vec::new();
    let res = client
        .get(format!("{base}/signin"))
        .send()
        .await
        .expect("sign-in page");
    keep_cookies(&mut jar, &res);
    let csrf = csrf_of(&res.text().await.expect("a page"));
    let password = format!("{username}-password-1");
    let res = client
        .post(format!("{base}/signin"))
        .header("cookie", jar.join("; "))
        .header("origin", base)
        .form(&[
            ("csrf", csrf.as_str()),
            ("login", username),
            ("password", &password),
        ])
        .send()
        .await
        .expect("sign in");
    assert_eq!(res.status(), 303, "signing in");
    keep_cookies(&mut jar, &res);
    let verifier = "load-harness-verifier-0123456789-0123456789-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let resource = format!("{base}/mcp");
    let params = [
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", redirect),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", "load"),
        ("scope", "skills:read skills:run"),
        ("resource", resource.as_str()),
    ];
    let res = client
        .get(format!("{base}/oauth/authorize"))
        .query(&params)
        .header("cookie", jar.join("; "))
        .send()
        .await
        .expect("consent page");
    assert_eq!(res.status(), 200, "the consent page");
    let csrf = csrf_of(&res.text().await.expect("a page"));
    let mut fields: Vec<(&str, &str)> = params.to_vec();
    fields.push(("csrf", &csrf));
    fields.push(("decision", "allow"));
    let res = client
        .post(format!("{base}/oauth/authorize"))
        .header("cookie", jar.join("; "))
        .header("origin", base)
        .form(&fields)
        .send()
        .await
        .expect("allow");
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a redirect to the client")
        .to_owned();
    let code = location
        .split_once("code=")
        .map(|(_, rest)| rest.split('&').next().unwrap_or(""))
        .expect("a code");
    let tokens: serde_json::Value = client
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", client_id.as_str()),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("tokens");
    tokens["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}
