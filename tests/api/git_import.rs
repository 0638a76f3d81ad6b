//! Skills imported from Git repositories and synced (issue 19), against real Git servers on
//! loopback: `git http-backend` (smart HTTP, as https is served) and `git daemon` (git://).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::git_server::{GitDaemon, GitHttp, Repo};
use crate::helpers::{Backend, TestApp, TestUser, expect_error, spawn_app, spawn_app_with};

backend_tests!(
    a_whole_repository_and_a_folder_of_it_are_imported,
    branches_tags_and_commits_are_imported_over_http_and_git_daemon,
    a_sync_makes_a_version_only_when_the_content_changed,
    a_sync_does_not_overwrite_a_change_made_by_hand_unless_forced,
    a_repository_over_the_limits_is_refused_with_nothing_written,
    private_addresses_are_refused_unless_the_setting_allows_them,
    imports_are_checked_field_by_field,
    the_periodic_sync_syncs_due_sources_and_records_refusals,
);

const PDF: &[u8] = b"---\nname: pdf-tools\ndescription: Fill and merge PDF forms.\n---\n# PDF\nUse scripts/fill.py.\n";
const DOCX: &[u8] = b"---\nname: docx-tools\ndescription: Edit Word documents.\n---\n# DOCX\n";

/// A repository with two skills under `skills/`, a README beside them and a symbolic link.
fn two_skills() -> Repo {
    let repo = Repo::new("team-skills");
    repo.write("README.md", b"# Our skills\n")
        .write("skills/pdf/SKILL.md", PDF)
        .write("skills/pdf/scripts/fill.py", b"print('fill')\n")
        .write("skills/docx/SKILL.md", DOCX);
    std::os::unix::fs::symlink("../README.md", repo.work.join("skills/pdf/README-link.md"))
        .unwrap();
    repo.commit("two skills");
    repo.publish();
    repo
}

/// An app that may fetch from loopback, as a self-hosted Git server needs.
async fn app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| s.import.allow_private_hosts = true).await
}

async fn import(app: &TestApp, user: &TestUser, body: Value) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/skills/import")
        .bearer_auth(&user.access)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn imported(app: &TestApp, user: &TestUser, body: Value) -> Value {
    let res = import(app, user, body).await;
    let status = res.status();
    let answer: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn sync(app: &TestApp, user: &TestUser, id: &str, force: bool) -> reqwest::Response {
    app.request(Method::POST, &format!("/api/v1/skills/{id}/sync"))
        .bearer_auth(&user.access)
        .json(&json!({"force": force}))
        .send()
        .await
        .unwrap()
}

async fn file(app: &TestApp, user: &TestUser, id: &str, path: &str) -> (StatusCode, String) {
    let res = app
        .get_auth(&format!("/api/v1/skills/{id}/files/{path}"), &user.access)
        .await;
    (res.status(), res.text().await.unwrap())
}

fn skill<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["skills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {answer}"))
}

async fn a_whole_repository_and_a_folder_of_it_are_imported(backend: Backend) {
    let app = app(backend).await;
    let user = app.user("ann").await;
    let repo = two_skills();
    let server = GitHttp::start(&repo.root).await;
    let head = repo.run(&["rev-parse", "HEAD"]);

    let answer = imported(&app, &user, json!({"url": server.url(&repo)})).await;
    assert_eq!(answer["commit"], head.as_str(), "{answer}");
    assert_eq!(answer["skills"].as_array().unwrap().len(), 2, "{answer}");
    let pdf = skill(&answer, "pdf-tools");
    assert_eq!(pdf["action"], "created");
    assert_eq!(pdf["path"], "skills/pdf");
    assert_eq!(pdf["version"], 1);
    // The README beside the skills and the symbolic link are left out, and said so.
    let ignored: Vec<&str> = answer["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(ignored.contains(&"README.md"), "{answer}");
    assert!(ignored.contains(&"skills/pdf/README-link.md"), "{answer}");

    let pdf_id = pdf["id"].as_str().unwrap().to_owned();
    let (status, text) = file(&app, &user, &pdf_id, "scripts/fill.py").await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "print('fill')\n"));
    let source = app
        .get_json(&format!("/api/v1/skills/{pdf_id}/source"), &user.access)
        .await;
    assert_eq!(source["url"], server.url(&repo).as_str(), "{source}");
    assert_eq!(source["ref"], Value::Null);
    assert_eq!(source["path"], "skills/pdf");
    assert_eq!(source["commit"], head.as_str());
    assert_eq!(source["synced_version"], 1);
    assert_eq!(source["changed_by_hand"], false);
    let sources = app.get_json("/api/v1/skills/sources", &user.access).await;
    assert_eq!(sources["items"].as_array().unwrap().len(), 2, "{sources}");

    // One folder of it, into another account: only that skill.
    let bob = app.user("bob").await;
    let answer = imported(
        &app,
        &bob,
        json!({"url": server.url(&repo), "path": "skills/docx"}),
    )
    .await;
    let names: Vec<&str> = answer["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docx-tools"], "{answer}");
    assert_eq!(skill(&answer, "docx-tools")["path"], "skills/docx");

    // The same again: nothing new to make, no version.
    let again = imported(&app, &user, json!({"url": server.url(&repo)})).await;
    assert_eq!(skill(&again, "pdf-tools")["action"], "unchanged", "{again}");
    assert_eq!(skill(&again, "pdf-tools")["version"], 1);

    // A folder without skills says so.
    let res = import(
        &app,
        &user,
        json!({"url": server.url(&repo), "path": "nowhere"}),
    )
    .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid-repository").await;

    // A deleted skill takes its source along.
    let res = app
        .delete_auth(&format!("/api/v1/skills/{pdf_id}"), &user.access)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let sources = app.get_json("/api/v1/skills/sources", &user.access).await;
    assert_eq!(sources["items"].as_array().unwrap().len(), 1, "{sources}");
}

async fn branches_tags_and_commits_are_imported_over_http_and_git_daemon(backend: Backend) {
    let app = app(backend).await;
    let user = app.user("ann").await;
    let repo = Repo::new("versions");
    repo.write(
        "SKILL.md",
        b"---\nname: notes\ndescription: First.\n---\none\n",
    );
    let first = repo.commit("one");
    repo.run(&["tag", "v1"]);
    repo.run(&["tag", "-a", "v1-annotated", "-m", "annotated"]);
    repo.write(
        "SKILL.md",
        b"---\nname: notes\ndescription: Second.\n---\ntwo\n",
    );
    repo.commit("two");
    repo.run(&["checkout", "-q", "-b", "next"]);
    repo.write(
        "SKILL.md",
        b"---\nname: notes\ndescription: Next.\n---\nnext\n",
    );
    repo.commit("next");
    repo.run(&["checkout", "-q", "main"]);
    repo.publish();
    let http = GitHttp::start(&repo.root).await;
    let daemon = GitDaemon::start(&repo.root).await;

    for url in [http.url(&repo), daemon.url(&repo)] {
        for (git_ref, body) in [
            (None, "two"),
            (Some("main"), "two"),
            (Some("next"), "next"),
            (Some("v1"), "one"),
            (Some("v1-annotated"), "one"),
            (Some(first.as_str()), "one"),
        ] {
            let answer = imported(&app, &user, json!({"url": url, "ref": git_ref})).await;
            let notes = skill(&answer, "notes");
            let id = notes["id"].as_str().unwrap();
            let (_, text) = file(&app, &user, id, "SKILL.md").await;
            assert!(
                text.ends_with(&format!("{body}\n")),
                "{url} at {git_ref:?}: {text}"
            );
            assert_eq!(answer["ref"], json!(git_ref), "{answer}");
        }
    }
    assert!(daemon.connections.load(std::sync::atomic::Ordering::SeqCst) >= 6);

    let res = import(
        &app,
        &user,
        json!({"url": http.url(&repo), "ref": "no-such-branch"}),
    )
    .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "ref-not-found").await;
    let res = import(
        &app,
        &user,
        json!({"url": http.url(&repo).replace("versions", "missing")}),
    )
    .await;
    let failed = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "fetch-failed").await;
    // Said in words, not as a debugging dump.
    assert!(
        !failed["detail"].as_str().unwrap().contains('{'),
        "{failed}"
    );
    eprintln!("{failed}");
}

async fn a_sync_makes_a_version_only_when_the_content_changed(backend: Backend) {
    let app = app(backend).await;
    let user = app.user("ann").await;
    let repo = two_skills();
    let server = GitHttp::start(&repo.root).await;
    let answer = imported(&app, &user, json!({"url": server.url(&repo)})).await;
    let pdf = skill(&answer, "pdf-tools")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let docx = skill(&answer, "docx-tools")["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Nothing changed: no version.
    let res = sync(&app, &user, &pdf, false).await;
    assert_eq!(res.status(), StatusCode::OK);
    let done: Value = res.json().await.unwrap();
    assert_eq!(done["skill"]["action"], "unchanged", "{done}");
    assert_eq!(done["skill"]["version"], 1);
    // A commit that touches only the README changes no skill either.
    repo.write("README.md", b"# Our skills, described\n");
    let readme_commit = repo.commit("readme");
    repo.publish();
    let done: Value = sync(&app, &user, &pdf, false).await.json().await.unwrap();
    assert_eq!(done["skill"]["action"], "unchanged", "{done}");
    let source = app
        .get_json(&format!("/api/v1/skills/{pdf}/source"), &user.access)
        .await;
    assert_eq!(source["commit"], readme_commit.as_str(), "{source}");

    // A changed file and a removed one: a new version with exactly the repository's files.
    repo.write("skills/pdf/SKILL.md", &[PDF, b"More.\n"].concat());
    repo.remove("skills/pdf/scripts/fill.py");
    repo.write("skills/pdf/scripts/merge.py", b"print('merge')\n");
    let head = repo.commit("pdf changes");
    repo.publish();
    let done: Value = sync(&app, &user, &pdf, false).await.json().await.unwrap();
    assert_eq!(done["skill"]["action"], "updated", "{done}");
    assert_eq!(done["skill"]["version"], 2);
    assert_eq!(done["commit"], head.as_str());
    assert_eq!(
        file(&app, &user, &pdf, "scripts/fill.py").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        file(&app, &user, &pdf, "scripts/merge.py").await.1,
        "print('merge')\n"
    );
    let versions = app
        .get_json(&format!("/api/v1/skills/{pdf}/versions"), &user.access)
        .await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 2, "{versions}");

    // Every source at once: docx is unchanged, pdf has nothing new either.
    repo.write("skills/docx/SKILL.md", &[DOCX, b"Tables too.\n"].concat());
    repo.commit("docx");
    repo.publish();
    let res = app
        .request(Method::POST, "/api/v1/skills/sync")
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let all: Value = res.json().await.unwrap();
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{all}");
    let of = |id: &str| items.iter().find(|i| i["skill_id"] == id).unwrap().clone();
    assert_eq!(of(&docx)["skill"]["action"], "updated", "{all}");
    assert_eq!(of(&pdf)["skill"]["action"], "unchanged", "{all}");

    // A skill that was not imported has no source.
    let hand = app
        .upload_skill(
            &user,
            &[("SKILL.md", b"---\nname: by-hand\ndescription: Mine.\n---\n")],
        )
        .await;
    let res = sync(&app, &user, &hand, false).await;
    expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    // The folder gone from the repository: the skill stays, the sync says why.
    repo.remove("skills/docx");
    repo.commit("docx gone");
    repo.publish();
    let res = sync(&app, &user, &docx, false).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid-repository").await;
    let source = app
        .get_json(&format!("/api/v1/skills/{docx}/source"), &user.access)
        .await;
    assert!(
        source["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no folder \"skills/docx\"")),
        "{source}"
    );
    assert_eq!(file(&app, &user, &docx, "SKILL.md").await.0, StatusCode::OK);
}

async fn a_sync_does_not_overwrite_a_change_made_by_hand_unless_forced(backend: Backend) {
    let app = app(backend).await;
    let user = app.user("ann").await;
    let repo = two_skills();
    let server = GitHttp::start(&repo.root).await;
    let answer = imported(&app, &user, json!({"url": server.url(&repo)})).await;
    let pdf = skill(&answer, "pdf-tools")["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A change by hand (a file uploaded into the skill) makes version 2.
    let boundary = "b";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"skill_id\"\r\n\r\n{pdf}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"notes.md\"\r\n\r\nmine\r\n\
         --{boundary}--\r\n"
    );
    let res = app
        .request(Method::POST, "/api/v1/skills/upload")
        .bearer_auth(&user.access)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let source = app
        .get_json(&format!("/api/v1/skills/{pdf}/source"), &user.access)
        .await;
    assert_eq!(source["changed_by_hand"], true, "{source}");

    repo.write("skills/pdf/SKILL.md", &[PDF, b"Upstream.\n"].concat());
    repo.commit("upstream");
    repo.publish();
    let res = sync(&app, &user, &pdf, false).await;
    let refused = expect_error(res, StatusCode::CONFLICT, "changed-by-hand").await;
    assert!(
        refused["detail"].as_str().unwrap().contains("force"),
        "{refused}"
    );
    assert_eq!(file(&app, &user, &pdf, "notes.md").await.1, "mine");
    let skill_now = app
        .get_json(&format!("/api/v1/skills/{pdf}"), &user.access)
        .await;
    assert_eq!(skill_now["version"], 2);

    let done: Value = sync(&app, &user, &pdf, true).await.json().await.unwrap();
    assert_eq!(done["skill"]["action"], "updated", "{done}");
    assert_eq!(done["skill"]["version"], 3);
    assert_eq!(
        file(&app, &user, &pdf, "notes.md").await.0,
        StatusCode::NOT_FOUND
    );
    let source = app
        .get_json(&format!("/api/v1/skills/{pdf}/source"), &user.access)
        .await;
    assert_eq!(source["changed_by_hand"], false, "{source}");
    assert_eq!(source["synced_version"], 3);
    // The hand-made version is still there to restore.
    let versions = app
        .get_json(&format!("/api/v1/skills/{pdf}/versions"), &user.access)
        .await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 3, "{versions}");
}

async fn a_repository_over_the_limits_is_refused_with_nothing_written(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.import.allow_private_hosts = true;
        s.import.max_bytes = 64 * 1024;
        s.skills.max_file_bytes = 32 * 1024;
    })
    .await;
    let user = app.user("ann").await;

    // Incompressible bytes (xorshift), so the pack is as large as the file.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let big = Repo::new("big");
    big.write("skills/a/SKILL.md", b"---\nname: a\ndescription: A.\n---\n")
        .write("skills/a/data.bin", &noise);
    big.commit("big");
    big.publish();
    let server = GitHttp::start(&big.root).await;
    let res = import(&app, &user, json!({"url": server.url(&big)})).await;
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE, "repository-too-large").await;

    // Within the fetch limit, one file over the per-file limit: refused, nothing of it kept.
    let one_large = Repo::new("one-large");
    one_large
        .write(
            "skills/ok/SKILL.md",
            b"---\nname: ok\ndescription: Fine.\n---\n",
        )
        .write("skills/a/SKILL.md", b"---\nname: a\ndescription: A.\n---\n")
        .write("skills/a/data.bin", &noise[..40 * 1024]);
    one_large.commit("one large file");
    one_large.publish();
    let server = GitHttp::start(&one_large.root).await;
    let res = import(&app, &user, json!({"url": server.url(&one_large)})).await;
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE, "file-too-large").await;

    let skills = app.get_json("/api/v1/skills", &user.access).await;
    assert_eq!(skills["total"], 0, "{skills}");
    let sources = app.get_json("/api/v1/skills/sources", &user.access).await;
    assert_eq!(sources["items"], json!([]));
    // No clone is left behind.
    let staging = app.data_dir.join("skills/.staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

async fn private_addresses_are_refused_unless_the_setting_allows_them(backend: Backend) {
    let repo = two_skills();
    let server = GitHttp::start(&repo.root).await;
    let daemon = GitDaemon::start(&repo.root).await;
    let strict = spawn_app(backend.clone()).await;
    let user = strict.user("ann").await;
    let port = server.addr.port();
    for url in [
        server.url(&repo),
        daemon.url(&repo),
        format!("https://127.0.0.1:{port}/git/team-skills.git"),
        format!("https://[::1]:{port}/git/team-skills.git"),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://10.0.0.8/skills.git".to_owned(),
        "file:///etc/passwd".to_owned(),
        format!("ssh://git@127.0.0.1:{port}/team-skills.git"),
    ] {
        let res = import(&strict, &user, json!({"url": url})).await;
        let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
        assert_eq!(body["errors"][0]["field"], "url", "{url}: {body}");
    }
    // A name that resolves to loopback passes the URL's check, and the resolver refuses it.
    let res = import(
        &strict,
        &user,
        json!({"url": format!("https://localhost:{port}/git/team-skills.git")}),
    )
    .await;
    let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "fetch-failed").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("resolves to no public address"),
        "{body}"
    );
    assert_eq!(
        server.requests(),
        0,
        "a refused import reached the Git server"
    );
    assert_eq!(
        daemon.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    let open = app(backend).await;
    let user = open.user("ann").await;
    let answer = imported(&open, &user, json!({"url": server.url(&repo)})).await;
    assert_eq!(answer["skills"].as_array().unwrap().len(), 2);
    assert!(server.requests() > 0);
}

async fn imports_are_checked_field_by_field(backend: Backend) {
    let app = app(backend).await;
    let user = app.user("ann").await;
    for (body, field) in [
        (json!({"url": ""}), "url"),
        (
            json!({"url": "https://user:secret@example.com/r.git"}),
            "url",
        ),
        (
            json!({"url": "https://example.com/r.git", "ref": "a..b"}),
            "ref",
        ),
        (
            json!({"url": "https://example.com/r.git", "ref": "--upload-pack=x"}),
            "ref",
        ),
        (
            json!({"url": "https://example.com/r.git", "path": "../etc"}),
            "path",
        ),
        (
            json!({"url": "https://example.com/r.git", "sync_interval_hours": 0}),
            "sync_interval_hours",
        ),
    ] {
        let res = import(&app, &user, body.clone()).await;
        let err = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
        assert_eq!(err["errors"][0]["field"], field, "{body}: {err}");
        // A credential is never repeated back.
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    let res = app
        .request(Method::POST, "/api/v1/skills/import")
        .json(&json!({"url": "https://example.com/r.git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

async fn the_periodic_sync_syncs_due_sources_and_records_refusals(backend: Backend) {
    let app = app(backend).await;
    let user = app.user("ann").await;
    let repo = two_skills();
    let server = GitHttp::start(&repo.root).await;
    let answer = imported(
        &app,
        &user,
        json!({"url": server.url(&repo), "sync_interval_hours": 6}),
    )
    .await;
    let pdf = skill(&answer, "pdf-tools")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let docx = skill(&answer, "docx-tools")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let source = app
        .get_json(&format!("/api/v1/skills/{pdf}/source"), &user.access)
        .await;
    assert_eq!(source["sync_interval_hours"], 6, "{source}");
    assert!(source["next_sync_at"].is_string(), "{source}");

    // docx changed by hand; both changed upstream.
    app.upload_skill(&user, &[("SKILL.md", &[DOCX, b"Mine.\n"].concat())])
        .await;
    repo.write("skills/pdf/SKILL.md", &[PDF, b"Upstream.\n"].concat());
    repo.write("skills/docx/SKILL.md", &[DOCX, b"Upstream.\n"].concat());
    repo.commit("upstream");
    repo.publish();

    let now = time::OffsetDateTime::now_utc();
    assert_eq!(
        app.state.imports.sync_due_at(now).await.unwrap(),
        0,
        "nothing is due yet"
    );
    let later = now + time::Duration::hours(7);
    assert_eq!(app.state.imports.sync_due_at(later).await.unwrap(), 2);
    // Claimed: not due again until the next interval.
    assert_eq!(app.state.imports.sync_due_at(later).await.unwrap(), 0);

    let pdf_now = app
        .get_json(&format!("/api/v1/skills/{pdf}"), &user.access)
        .await;
    assert_eq!(pdf_now["version"], 2, "{pdf_now}");
    let docx_now = app
        .get_json(&format!("/api/v1/skills/{docx}"), &user.access)
        .await;
    assert_eq!(
        docx_now["version"], 2,
        "the change by hand stays: {docx_now}"
    );
    let source = app
        .get_json(&format!("/api/v1/skills/{docx}/source"), &user.access)
        .await;
    assert!(
        source["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("force")),
        "{source}"
    );
    // A later import that does not say keeps the interval; PATCH turns it off.
    imported(
        &app,
        &user,
        json!({"url": server.url(&repo), "path": "skills/pdf"}),
    )
    .await;
    let source = app
        .get_json(&format!("/api/v1/skills/{pdf}/source"), &user.access)
        .await;
    assert_eq!(source["sync_interval_hours"], 6, "{source}");
    let res = app
        .request(Method::PATCH, &format!("/api/v1/skills/{pdf}/source"))
        .bearer_auth(&user.access)
        .json(&json!({"sync_interval_hours": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let source: Value = res.json().await.unwrap();
    assert_eq!(source["sync_interval_hours"], Value::Null, "{source}");
    assert_eq!(source["next_sync_at"], Value::Null, "{source}");
}
