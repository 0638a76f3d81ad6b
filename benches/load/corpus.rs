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
