//! `/api/v1/skills*`: CRUD, uploads (files and zips), downloads, exports, limits, hostile input,
//! isolation between users, consistency after crashes.

use std::io::Write as _;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, expect_error, spawn_app, spawn_app_with};

backend_tests!(
    a_skill_is_created_read_updated_and_deleted,
    skill_names_and_descriptions_are_checked,
    skills_are_listed_in_pages_and_searched,
    files_upload_as_a_new_skill,
    an_upload_to_a_skill_replaces_the_files_given_and_keeps_the_others,
    zips_upload_with_skill_md_at_the_root_or_in_one_top_folder,
    an_export_uploads_again_as_the_same_skill,
    hostile_paths_are_refused_and_nothing_is_written,
    hostile_zips_are_refused_and_nothing_is_written,
    skill_md_is_checked_on_upload,
    size_and_count_limits_are_enforced,
    another_users_skills_are_not_found,
    reads_never_follow_a_symlink,
    a_restart_repairs_what_a_crash_left,
    concurrent_uploads_to_one_skill_are_serialized,
    idle_workspaces_stop_and_come_back,
    costly_front_matter_is_refused_without_stalling_the_server,
    file_names_that_collide_elsewhere_are_refused_or_warned,
    text_fields_given_twice_are_refused,
    zips_as_people_make_them,
    the_corpus_of_skill_md_forms_is_accepted_with_its_warnings,
);

const SKILL_MD: &str =
    "---\nname: pdf\ndescription: Work with PDF files.\n---\n# PDF\n\nUse scripts/convert.py.\n";

fn skill_md(name: &str, description: &str) -> String {
    format!("---\nname: {name}\ndescription: {description}\n---\n# {name}\n")
}

/// A multipart body: (field name, file name, bytes) parts. Built by hand so that tests can send
/// what no well-behaved client would.
pub(crate) fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "XtestBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, file_name, data) in parts {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""
        )
        .unwrap();
        if let Some(file_name) = file_name {
            write!(body, "; filename=\"{file_name}\"").unwrap();
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub(crate) async fn upload(
    app: &TestApp,
    user: &TestUser,
    parts: &[(&str, Option<&str>, &[u8])],
) -> reqwest::Response {
    let (content_type, body) = multipart(parts);
    app.request(Method::POST, "/api/v1/skills/upload")
        .bearer_auth(&user.access)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Uploads and returns the skill's id, failing the test if the upload is refused.
async fn upload_id(
    app: &TestApp,
    user: &TestUser,
    parts: &[(&str, Option<&str>, &[u8])],
) -> String {
    let res = upload(app, user, parts).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A zip of `entries`; a name ending in `/` is a folder entry.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for (name, data) in entries {
        if name.ends_with('/') {
            zip.add_directory(*name, options).unwrap();
            continue;
        }
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

async fn create(
    app: &TestApp,
    user: &TestUser,
    name: &str,
    description: &str,
) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/skills")
        .bearer_auth(&user.access)
        .json(&json!({"name": name, "description": description}))
        .send()
        .await
        .unwrap()
}

async fn download(app: &TestApp, user: &TestUser, id: &str, path: &str) -> reqwest::Response {
    app.get_auth(&format!("/api/v1/skills/{id}/files/{path}"), &user.access)
        .await
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every file below `dir`, as relative paths.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

async fn a_skill_is_created_read_updated_and_deleted(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let res = create(
        &app,
        &ann,
        "pdf",
        "Work with PDF files: split, merge, fill forms.",
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "pdf");
    assert_eq!(created["is_active"], true);
    assert_eq!(created["skill_dir"], format!("{}/pdf", ann.id));
    let folder = app.data_dir.join("skills").join(&ann.id).join("pdf");
    let text = std::fs::read_to_string(folder.join("SKILL.md")).unwrap();
    assert!(text.starts_with("---\n"), "{text}");

    let skill = app
        .get_json(&format!("/api/v1/skills/{id}"), &ann.access)
        .await;
    assert_eq!(
        skill["description"],
        "Work with PDF files: split, merge, fill forms."
    );
    assert_eq!(skill["files"][0]["path"], "SKILL.md");
    assert_eq!(skill["files"][0]["size"], text.len());
    assert_eq!(skill["files"][0]["sha256"], sha256_hex(text.as_bytes()));
    let res = download(&app, &ann, &id, "SKILL.md").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), text);
    let me = app.get_json("/api/v1/users/me", &ann.access).await;
    assert_eq!(me["skill_count"], 1);

    let res = app
        .request(Method::PUT, &format!("/api/v1/skills/{id}"))
        .bearer_auth(&ann.access)
        .json(&json!({"description": "Read and write PDFs.", "is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let updated: Value = res.json().await.unwrap();
    assert_eq!(updated["description"], "Read and write PDFs.");
    assert_eq!(updated["is_active"], false);
    let text = std::fs::read_to_string(folder.join("SKILL.md")).unwrap();
    assert!(
        text.contains("Read and write PDFs."),
        "SKILL.md not kept in step: {text}"
    );
    assert!(text.contains("name: pdf"), "{text}");
    let listed = app.get_json("/api/v1/skills", &ann.access).await;
    assert_eq!(
        listed["items"][0]["is_active"], false,
        "inactive skills stay listed for their owner"
    );
    assert_eq!(listed["items"][0]["file_count"], 1);

    let res = app
        .delete_auth(&format!("/api/v1/skills/{id}"), &ann.access)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(!folder.exists());
    expect_error(
        app.get_auth(&format!("/api/v1/skills/{id}"), &ann.access)
            .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_error(
        app.delete_auth(&format!("/api/v1/skills/{id}"), &ann.access)
            .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let me = app.get_json("/api/v1/users/me", &ann.access).await;
    assert_eq!(me["skill_count"], 0);
}

async fn skill_names_and_descriptions_are_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    for name in [
        "PDF",
        "-pdf",
        "pdf-",
        "p--df",
        "",
        "p_df",
        "p df",
        &"a".repeat(65),
    ] {
        let res = create(&app, &ann, name, "A description.").await;
        let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
        assert_eq!(body["errors"][0]["field"], "name", "{name:?}: {body}");
    }
    for description in ["", "   ", &"d".repeat(8 * 1024 + 1)] {
        let res = create(&app, &ann, "pdf", description).await;
        let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
        assert_eq!(body["errors"][0]["field"], "description");
    }
    let res = create(&app, &ann, &"a".repeat(64), &"d".repeat(1024)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.json::<Value>().await.unwrap()["warnings"], json!([]));
    // Longer than the Agent Skills format asks: made, with a warning that says so.
    let res = create(&app, &ann, "long", &"d".repeat(1025)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["warnings"][0]["code"], "description-too-long",
        "{body}"
    );
    assert_eq!(
        create(&app, &ann, "pdf", "First.").await.status(),
        StatusCode::CREATED
    );
    expect_error(
        create(&app, &ann, "pdf", "Second.").await,
        StatusCode::BAD_REQUEST,
        "skill-exists",
    )
    .await;
    // Descriptions YAML would misread come back exactly.
    let tricky = "Handles: colons, \"quotes\", 'apostrophes', # hashes and - dashes";
    let res = create(&app, &ann, "tricky", tricky).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["description"], tricky);
}

async fn skills_are_listed_in_pages_and_searched(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    for i in 0..25 {
        let description = if i % 5 == 0 {
            format!("Converts SPREADSHEETS number {i}")
        } else {
            format!("Skill number {i}")
        };
        assert_eq!(
            create(&app, &ann, &format!("skill-{i:02}"), &description)
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    let page = app.get_json("/api/v1/skills", &ann.access).await;
    assert_eq!(
        (
            page["total"].as_u64(),
            page["skip"].as_u64(),
            page["limit"].as_u64()
        ),
        (Some(25), Some(0), Some(20))
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 20);
    assert_eq!(page["items"][0]["name"], "skill-00");
    let page = app
        .get_json("/api/v1/skills?skip=20&limit=100", &ann.access)
        .await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["skill-20", "skill-21", "skill-22", "skill-23", "skill-24"]
    );
    let page = app
        .get_json("/api/v1/skills?search=spreadsheets", &ann.access)
        .await;
    assert_eq!(page["total"], 5);
    // A ranked search: every skill shares the word "skill", so all match; those whose name
    // holds the text as typed come first.
    let page = app
        .get_json("/api/v1/skills?search=skill-1&limit=10", &ann.access)
        .await;
    assert_eq!(page["total"], 25);
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10);
    assert!(names.iter().all(|n| n.starts_with("skill-1")), "{names:?}");
    for query in ["limit=101", "limit=0", "skip=-1", "limit=ten"] {
        let res = app
            .get_auth(&format!("/api/v1/skills?{query}"), &ann.access)
            .await;
        expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    }
}

async fn files_upload_as_a_new_skill(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let script = b"print('convert')\n";
    let guide = "# Guide\n\nÜnïcödé text.\n".as_bytes();
    let res = upload(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), SKILL_MD.as_bytes()),
            ("files", Some("scripts/convert.py"), script),
            ("files", Some("references/guide.md"), guide),
        ],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "pdf");
    assert_eq!(body["description"], "Work with PDF files.");
    assert_eq!(
        body["uploaded_files"],
        json!(["SKILL.md", "scripts/convert.py", "references/guide.md"])
    );
    let id = body["id"].as_str().unwrap();
    let files = app
        .get_json(&format!("/api/v1/skills/{id}/files"), &ann.access)
        .await;
    assert_eq!(files["total"], 3);
    let listed: Vec<(String, u64, String)> = files["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["size"].as_u64().unwrap(),
                f["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (
                "SKILL.md".to_owned(),
                SKILL_MD.len() as u64,
                sha256_hex(SKILL_MD.as_bytes())
            ),
            (
                "references/guide.md".to_owned(),
                guide.len() as u64,
                sha256_hex(guide)
            ),
            (
                "scripts/convert.py".to_owned(),
                script.len() as u64,
                sha256_hex(script)
            ),
        ]
    );
    let res = download(&app, &ann, id, "scripts/convert.py").await;
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    assert_eq!(res.bytes().await.unwrap().as_ref(), script);
    let res = download(&app, &ann, id, "references/guide.md").await;
    assert_eq!(res.bytes().await.unwrap().as_ref(), guide);
    expect_error(
        download(&app, &ann, id, "scripts/missing.py").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_error(
        download(&app, &ann, id, "scripts").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    // A skill named by `skill_name` with a description and no SKILL.md gets one made for it.
    let res = upload(
        &app,
        &ann,
        &[
            ("skill_name", None, b"notes"),
            ("description", None, b"Keeps notes."),
            ("files", Some("notes.txt"), b"hello"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["description"], "Keeps notes.");
    let id = body["id"].as_str().unwrap();
    let text = download(&app, &ann, id, "SKILL.md")
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("name: notes"), "{text}");
}

async fn an_upload_to_a_skill_replaces_the_files_given_and_keeps_the_others(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let id = upload_id(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), SKILL_MD.as_bytes()),
            ("files", Some("scripts/a.py"), b"v1"),
            ("files", Some("scripts/b.py"), b"b"),
        ],
    )
    .await;
    let res = upload(
        &app,
        &ann,
        &[
            ("skill_id", None, id.as_bytes()),
            ("files", Some("scripts/a.py"), b"v2"),
            ("files", Some("c.txt"), b"c"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["uploaded_files"], json!(["scripts/a.py", "c.txt"]));
    assert_eq!(
        download(&app, &ann, &id, "scripts/a.py")
            .await
            .text()
            .await
            .unwrap(),
        "v2"
    );
    assert_eq!(
        download(&app, &ann, &id, "scripts/b.py")
            .await
            .text()
            .await
            .unwrap(),
        "b"
    );
    assert_eq!(
        download(&app, &ann, &id, "c.txt")
            .await
            .text()
            .await
            .unwrap(),
        "c"
    );
    let files = app
        .get_json(&format!("/api/v1/skills/{id}/files"), &ann.access)
        .await;
    assert_eq!(files["total"], 4);
    // By name, with a new description that is written into SKILL.md.
    let res = upload(
        &app,
        &ann,
        &[
            ("skill_name", None, b"pdf"),
            ("description", None, b"PDF tools, v2."),
            ("files", Some("d.txt"), b"d"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], id.as_str());
    let skill = app
        .get_json(&format!("/api/v1/skills/{id}"), &ann.access)
        .await;
    assert_eq!(skill["description"], "PDF tools, v2.");
    let text = download(&app, &ann, &id, "SKILL.md")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("PDF tools, v2.") && text.contains("# PDF"),
        "{text}"
    );
    let list = app.get_json("/api/v1/skills", &ann.access).await;
    assert_eq!(list["total"], 1);
}

async fn zips_upload_with_skill_md_at_the_root_or_in_one_top_folder(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let root = zip_of(&[
        ("SKILL.md", SKILL_MD.as_bytes()),
        ("scripts/run.sh", b"echo hi"),
    ]);
    let res = upload(&app, &ann, &[("files", Some("pdf.zip"), &root)]).await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(
        download(&app, &ann, id, "scripts/run.sh")
            .await
            .text()
            .await
            .unwrap(),
        "echo hi"
    );
    let docx = skill_md("docx", "Word documents.");
    let nested = zip_of(&[
        ("docx/", b""),
        ("docx/SKILL.md", docx.as_bytes()),
        ("docx/ref/a.md", b"a"),
    ]);
    let res = upload(&app, &ann, &[("files", Some("Docx.ZIP"), &nested)]).await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "docx");
    let id = body["id"].as_str().unwrap();
    let files = app
        .get_json(&format!("/api/v1/skills/{id}/files"), &ann.access)
        .await;
    let paths: Vec<&str> = files["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["SKILL.md", "ref/a.md"]);
    // A file beside the skill's folder is left out (and said so); the folder's name differs
    // from the SKILL.md's, which is said too.
    let beside = zip_of(&[("a/x.md", b"x"), ("b/SKILL.md", SKILL_MD.as_bytes())]);
    let res = upload(&app, &ann, &[("files", Some("beside.zip"), &beside)]).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "pdf", "{body}");
    assert_eq!(body["ignored"], json!(["a/x.md"]), "{body}");
    assert_eq!(body["warnings"][0]["code"], "name-mismatch", "{body}");
    let no_skill_md = zip_of(&[("a/x.md", b"x"), ("b/README.md", b"y")]);
    let res = upload(&app, &ann, &[("files", Some("bad.zip"), &no_skill_md)]).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "missing-skill-md").await;
    let garbage = upload(
        &app,
        &ann,
        &[("files", Some("bad.zip"), b"PK\x03\x04 this is not a zip")],
    )
    .await;
    assert_eq!(garbage.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn an_export_uploads_again_as_the_same_skill(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let id = upload_id(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), SKILL_MD.as_bytes()),
            ("files", Some("scripts/convert.py"), b"print(1)"),
            ("files", Some("a/b/c/d.txt"), b"deep"),
        ],
    )
    .await;
    let res = app
        .get_auth(&format!("/api/v1/skills/{id}/export"), &ann.access)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/zip");
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("pdf.zip")
    );
    let archive = res.bytes().await.unwrap().to_vec();
    let res = upload(&app, &bob, &[("files", Some("pdf.zip"), &archive)]).await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    let bob_id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ann_files = app
        .get_json(&format!("/api/v1/skills/{id}/files"), &ann.access)
        .await;
    let bob_files = app
        .get_json(&format!("/api/v1/skills/{bob_id}/files"), &bob.access)
        .await;
    assert_eq!(ann_files, bob_files);
}

/// Asserts that the user's skills and the staging area hold exactly `expected` (relative paths
/// below `<data_dir>/skills`), so a refused upload wrote nothing anywhere.
fn assert_nothing_written(app: &TestApp, before: &[String]) {
    let now = files_below(&app.data_dir.join("skills"));
    assert_eq!(now, before, "a refused upload changed the skills folder");
    let everything = files_below(app.data_dir.parent().unwrap());
    assert!(
        !everything.iter().any(|p| p == "x" || p.ends_with("/x")),
        "a file named x was written: {everything:?}"
    );
}

async fn hostile_paths_are_refused_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    assert_eq!(
        create(&app, &ann, "pdf", "PDF.").await.status(),
        StatusCode::CREATED
    );
    let before = files_below(&app.data_dir.join("skills"));
    let deep = vec!["d"; 17].join("/");
    for path in [
        "../x",
        "a/../../x",
        "/etc/x",
        "..\\x",
        "C:\\x",
        "C:x",
        "a\0b",
        &deep,
        "a//b",
        "./x",
        "a/./b",
        "",
    ] {
        let res = upload(
            &app,
            &ann,
            &[
                ("skill_name", None, b"pdf"),
                ("files", Some(path), b"owned"),
            ],
        )
        .await;
        let status = res.status();
        assert!(status.is_client_error(), "{path:?} got {status}");
        assert_nothing_written(&app, &before);
    }
    // Exactly 16 levels is fine.
    let sixteen = vec!["d"; 16].join("/");
    let res = upload(
        &app,
        &ann,
        &[
            ("skill_name", None, b"pdf"),
            ("files", Some(&sixteen), b"ok"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // A URL path cannot climb out either.
    let id = app.get_json("/api/v1/skills", &ann.access).await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        "..%2F..%2Fsecret_key",
        "../../secret_key",
        "%2Fetc%2Fpasswd",
    ] {
        let res = download(&app, &ann, &id, path).await;
        assert!(res.status().is_client_error(), "{path}: {}", res.status());
        let text = res.text().await.unwrap();
        assert!(!text.contains("root:") && text.len() < 1000, "{text}");
    }
}

async fn hostile_zips_are_refused_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let before = files_below(&app.data_dir.join("skills"));
    let skill = SKILL_MD.as_bytes();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dot-dot",
            zip_of(&[("SKILL.md", skill), ("../x", b"owned")]),
        ),
        (
            "nested dot-dot",
            zip_of(&[("SKILL.md", skill), ("a/../../x", b"owned")]),
        ),
        (
            "absolute",
            zip_of(&[("SKILL.md", skill), ("/tmp/x", b"owned")]),
        ),
        (
            "backslash",
            zip_of(&[("SKILL.md", skill), ("..\\x", b"owned")]),
        ),
    ];
    let symlink = {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("SKILL.md", options).unwrap();
        zip.write_all(skill).unwrap();
        zip.add_symlink("link", "/etc/passwd", options).unwrap();
        zip.finish().unwrap().into_inner()
    };
    cases.push(("symlink", symlink));
    // Two entries with one name: write two names of one length, then make them equal.
    let mut duplicate = zip_of(&[("SKILL.md", skill), ("a.txt", b"one"), ("b.txt", b"two")]);
    for i in 0..duplicate.len() - 5 {
        if &duplicate[i..i + 5] == b"b.txt" {
            duplicate[i..i + 5].copy_from_slice(b"a.txt");
        }
    }
    cases.push(("duplicate", duplicate));
    for (what, archive) in &cases {
        let res = upload(&app, &ann, &[("files", Some("evil.zip"), archive)]).await;
        assert!(res.status().is_client_error(), "{what}: {}", res.status());
        assert_nothing_written(&app, &before);
    }
    // 200 MiB of zeros deflates to about 200 KiB; unpacking stops at the cap.
    let bomb = {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("SKILL.md", options).unwrap();
        zip.write_all(skill).unwrap();
        zip.start_file("zeros.bin", options).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..200 {
            zip.write_all(&chunk).unwrap();
        }
        zip.finish().unwrap().into_inner()
    };
    assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
    let started = std::time::Instant::now();
    let res = upload(&app, &ann, &[("files", Some("bomb.zip"), &bomb)]).await;
    assert_eq!(
        res.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        res.text().await.unwrap()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_nothing_written(&app, &before);
}

async fn skill_md_is_checked_on_upload(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    for (text, rule) in [
        ("---\nname: pdf\n---\nbody\n", "description"),
        (
            "---\nname: pdf\ndescription: ''\n---\nbody\n",
            "description",
        ),
        ("no front matter\n", "front matter"),
        (
            "---\nname: Bad_Name\ndescription: x\n---\n",
            "try \"bad-name\"",
        ),
        ("---\ndescription: x\n---\n", "name"),
    ] {
        let res = upload(&app, &ann, &[("files", Some("SKILL.md"), text.as_bytes())]).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}: {body}");
        let detail = body["detail"].as_str().unwrap().to_lowercase();
        assert!(
            detail.contains(&rule.to_lowercase()),
            "{text}: the message does not name the rule: {body}"
        );
    }
    assert_eq!(
        app.get_json("/api/v1/skills", &ann.access).await["total"],
        0
    );
    // What the Agent Skills rules say and other tools do not enforce: accepted, with warnings.
    let other_name = skill_md("docx", "Word.");
    let long_description = format!("---\nname: pdf\ndescription: {}\n---\n", "d".repeat(1025));
    let long_compatibility = format!(
        "---\nname: pdf\ndescription: x\ncompatibility: {}\n---\n",
        "c".repeat(501)
    );
    for (parts, code) in [
        (
            vec![
                ("skill_name", None, b"pdf".as_slice()),
                ("files", Some("SKILL.md"), other_name.as_bytes()),
            ],
            "name-mismatch",
        ),
        (
            vec![(
                "files",
                Some("SKILL.md"),
                b"---\nname: pdf\ndescription: x\nauthor: me\n---\n".as_slice(),
            )],
            "unknown-field",
        ),
        (
            vec![("files", Some("SKILL.md"), long_description.as_bytes())],
            "description-too-long",
        ),
        (
            vec![("files", Some("SKILL.md"), long_compatibility.as_bytes())],
            "compatibility-too-long",
        ),
        (
            vec![(
                "files",
                Some("SKILL.md"),
                b"---\nname: pdf\ndescription: [unclosed\n---\n".as_slice(),
            )],
            "yaml-invalid",
        ),
    ] {
        let res = upload(&app, &ann, &parts).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{code}: {body}");
        assert_eq!(body["name"], "pdf", "{body}");
        let codes: Vec<&str> = body["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, [code], "{body}");
    }
    let id = app.get_json("/api/v1/skills", &ann.access).await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .request(Method::DELETE, &format!("/api/v1/skills/{id}"))
        .bearer_auth(&ann.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // YAML the way people write it: folded and literal blocks, quotes, `---` in the body.
    let folded = "---\nname: \"pdf\"\ndescription: >\n  Work with PDF\n  files.\nlicense: MIT\ncompatibility: 'Python 3.11+'\nmetadata:\n  version: \"1.2\"\nallowed-tools: Bash Read\n---\n# PDF\n\n---\n\nMore body.\n";
    let res = upload(
        &app,
        &ann,
        &[("files", Some("SKILL.md"), folded.as_bytes())],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    let literal = "---\nname: docx\ndescription: |\n  Line one.\n  Line two.\n---\n";
    let res = upload(
        &app,
        &ann,
        &[("files", Some("SKILL.md"), literal.as_bytes())],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    let list = app.get_json("/api/v1/skills", &ann.access).await;
    let descriptions: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["description"].as_str().unwrap())
        .collect();
    assert!(
        descriptions[0].starts_with("Line one.\nLine two."),
        "{descriptions:?}"
    );
    assert!(
        descriptions[1].starts_with("Work with PDF files."),
        "{descriptions:?}"
    );
}

async fn size_and_count_limits_are_enforced(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.skills.max_file_bytes = 1000;
        s.skills.max_skill_bytes = 3000;
        s.skills.max_skill_files = 5;
        s.skills.max_user_bytes = 5000;
        s.skills.max_upload_bytes = 2_000_000;
    })
    .await;
    let ann = app.user("ann").await;
    let skill = SKILL_MD.as_bytes();
    let big = vec![b'x'; 1001];
    let res = upload(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), skill),
            ("files", Some("big.bin"), &big),
        ],
    )
    .await;
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE, "file-too-large").await;
    let kb = vec![b'x'; 900];
    let res = upload(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), skill),
            ("files", Some("1"), &kb),
            ("files", Some("2"), &kb),
            ("files", Some("3"), &kb),
            ("files", Some("4"), &kb),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let one = b"1".as_slice();
    let res = upload(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), skill),
            ("files", Some("1"), one),
            ("files", Some("2"), one),
            ("files", Some("3"), one),
            ("files", Some("4"), one),
            ("files", Some("5"), one),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The same limits inside a zip.
    let archive = zip_of(&[("SKILL.md", skill), ("big.bin", &big)]);
    let res = upload(&app, &ann, &[("files", Some("a.zip"), &archive)]).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The account's quota across skills: distinct files count, each once.
    let contents: Vec<(Vec<u8>, Vec<u8>)> = (0u8..3)
        .map(|n| (vec![b'a' + n; 900], vec![b'x' + n; 900]))
        .collect();
    for (name, (a, b)) in ["one", "two"].into_iter().zip(&contents) {
        let text = skill_md(name, "Quota test.");
        let res = upload(
            &app,
            &ann,
            &[
                ("files", Some("SKILL.md"), text.as_bytes()),
                ("files", Some("a"), a),
                ("files", Some("b"), b),
            ],
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let text = skill_md("three", "Quota test.");
    let res = upload(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), text.as_bytes()),
            ("files", Some("a"), &contents[2].0),
            ("files", Some("b"), &contents[2].1),
        ],
    )
    .await;
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE, "quota-exceeded").await;
    // The same files in another skill cost nothing more: only its SKILL.md is new.
    let res = upload(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), text.as_bytes()),
            ("files", Some("a"), &contents[0].0),
            ("files", Some("b"), &contents[1].1),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // A body of 10,000 parts: refused for their number.
    let fields: Vec<(&str, Option<&str>, &[u8])> = (0..10_000)
        .map(|_| ("files", Some("a"), b"x".as_slice()))
        .collect();
    let res = upload(&app, &ann, &fields).await;
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE, "too-many-parts").await;
    // A body over the limit, refused from its Content-Length before it is sent.
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/skills/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 2000001\r\n\r\n",
        ann.access
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // And one that does not say its length: read up to the limit, then refused.
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/skills/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        ann.access, 2_000_001
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
        .await
        .unwrap();
    // Exactly one byte too many and nothing after it, so the server has read everything sent.
    tokio::io::AsyncWriteExt::write_all(&mut stream, &vec![b'-'; 2_000_001])
        .await
        .unwrap();
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let res = upload(
        &app,
        &ann,
        &[("files", Some("SKILL.md"), skill), ("surprise", None, b"x")],
    )
    .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    let res = app
        .request(Method::POST, "/api/v1/skills/upload")
        .bearer_auth(&ann.access)
        .json(&json!({"files": []}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "multipart-expected").await;
    // "one", "two" and "three" (made of the first two's files): the refusals wrote nothing.
    assert_eq!(
        app.get_json("/api/v1/skills", &ann.access).await["total"],
        3
    );
}

async fn another_users_skills_are_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let id = upload_id(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), SKILL_MD.as_bytes()),
            ("files", Some("secret.txt"), b"ann's"),
        ],
    )
    .await;
    for path in [
        format!("/api/v1/skills/{id}"),
        format!("/api/v1/skills/{id}/files"),
        format!("/api/v1/skills/{id}/files/secret.txt"),
        format!("/api/v1/skills/{id}/export"),
    ] {
        expect_error(
            app.get_auth(&path, &bob.access).await,
            StatusCode::NOT_FOUND,
            "not-found",
        )
        .await;
    }
    let res = app
        .request(Method::PUT, &format!("/api/v1/skills/{id}"))
        .bearer_auth(&bob.access)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    expect_error(
        app.delete_auth(&format!("/api/v1/skills/{id}"), &bob.access)
            .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let res = upload(
        &app,
        &bob,
        &[
            ("skill_id", None, id.as_bytes()),
            ("files", Some("secret.txt"), b"bob's"),
        ],
    )
    .await;
    expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    // Bob's own skill of the same name is his own.
    let res = upload(
        &app,
        &bob,
        &[("files", Some("SKILL.md"), SKILL_MD.as_bytes())],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_ne!(res.json::<Value>().await.unwrap()["id"], id.as_str());
    assert_eq!(
        download(&app, &ann, &id, "secret.txt")
            .await
            .text()
            .await
            .unwrap(),
        "ann's"
    );
    assert_eq!(
        app.get_json("/api/v1/skills", &bob.access).await["total"],
        1
    );
    assert_eq!(
        app.get_json("/api/v1/skills", &ann.access).await["total"],
        1
    );
}

async fn reads_never_follow_a_symlink(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let id = upload_id(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), SKILL_MD.as_bytes()),
            ("files", Some("scripts/ok.py"), b"ok"),
        ],
    )
    .await;
    let res = upload(
        &app,
        &bob,
        &[
            ("files", Some("SKILL.md"), SKILL_MD.as_bytes()),
            ("files", Some("private.txt"), b"bob's secret"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // What a shell command could plant later.
    let folder = app.data_dir.join("skills").join(&ann.id).join("pdf");
    let bob_file = app
        .data_dir
        .join("skills")
        .join(&bob.id)
        .join("pdf")
        .join("private.txt");
    std::os::unix::fs::symlink("/etc/passwd", folder.join("passwd")).unwrap();
    std::os::unix::fs::symlink(&bob_file, folder.join("bob.txt")).unwrap();
    std::os::unix::fs::symlink(app.data_dir.join("secret_key"), folder.join("scripts/key"))
        .unwrap();
    std::os::unix::fs::symlink(
        app.data_dir.join("skills").join(&bob.id),
        folder.join("bobdir"),
    )
    .unwrap();
    for path in ["passwd", "bob.txt", "scripts/key", "bobdir/pdf/private.txt"] {
        let res = download(&app, &ann, &id, path).await;
        let status = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {text}");
        assert!(
            !text.contains("root:") && !text.contains("bob's secret"),
            "{text}"
        );
    }
    assert_eq!(
        download(&app, &ann, &id, "scripts/ok.py")
            .await
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let archive = app
        .get_auth(&format!("/api/v1/skills/{id}/export"), &ann.access)
        .await
        .bytes()
        .await
        .unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive.to_vec())).unwrap();
    let names: Vec<String> = (0..zip.len())
        .map(|i| zip.by_index(i).unwrap().name().to_owned())
        .collect();
    assert_eq!(names, ["pdf/SKILL.md", "pdf/scripts/ok.py"]);
}

async fn a_restart_repairs_what_a_crash_left(backend: Backend) {
    let mut app = spawn_app(backend.clone()).await;
    let ann = app.user("ann").await;
    let user_id = uuid::Uuid::parse_str(&ann.id).unwrap();
    assert_eq!(
        create(&app, &ann, "kept", "Stays.").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        create(&app, &ann, "lost", "Folder goes.").await.status(),
        StatusCode::CREATED
    );
    app.stop().await;
    let skills = app.data_dir.join("skills");
    let user_root = skills.join(&ann.id);
    // A crash after the version was recorded, before its folder was swapped in: a row whose
    // folder is missing.
    std::fs::remove_dir_all(user_root.join("lost")).unwrap();
    // A crash after the folder, before the row: a folder without a row.
    std::fs::create_dir_all(user_root.join("orphan")).unwrap();
    std::fs::write(
        user_root.join("orphan/SKILL.md"),
        skill_md("orphan", "No row."),
    )
    .unwrap();
    // A crash during an upload: a staged folder never swapped in.
    std::fs::create_dir_all(skills.join(".staging/abandoned/scripts")).unwrap();
    std::fs::write(skills.join(".staging/abandoned/scripts/x.py"), "x").unwrap();
    // A crash while removing a deleted account's folder.
    std::fs::create_dir_all(skills.join(".removing-gone-1234/pdf")).unwrap();
    std::fs::write(skills.join(".removing-gone-1234/pdf/SKILL.md"), "x").unwrap();
    // SKILL.md edited behind the server's back, in place: the version is the truth, and the
    // stored blob is not touched (it is a copy, not a link).
    std::fs::write(
        user_root.join("kept/SKILL.md"),
        skill_md("kept", "Edited on disk."),
    )
    .unwrap();

    let data_dir = app.data_dir.clone();
    let url = app.settings.database.url.clone();
    let again = spawn_app_with(backend, |s| {
        s.server.data_dir = data_dir;
        s.database.url = url;
    })
    .await;
    let list = again.get_json("/api/v1/skills", &ann.access).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    // Both skills are their current version again, made from their blobs.
    assert_eq!(names, ["kept", "lost"]);
    assert_eq!(list["items"][0]["description"], "Stays.");
    let kept = std::fs::read_to_string(user_root.join("kept/SKILL.md")).unwrap();
    assert!(kept.contains("Stays."), "{kept}");
    let lost = std::fs::read_to_string(user_root.join("lost/SKILL.md")).unwrap();
    assert!(lost.contains("Folder goes."), "{lost}");
    assert!(
        !user_root.join("orphan").exists(),
        "the orphan folder is still there"
    );
    assert!(
        files_below(&skills.join(".staging")).is_empty(),
        "staging not cleaned"
    );
    assert!(
        !skills.join(".removing-gone-1234").exists(),
        "a half-removed folder is still there"
    );
    let rows = again.state.store.skills_of_user(user_id).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.name.as_str(), r.version))
            .collect::<Vec<_>>(),
        [("kept", 1), ("lost", 1)]
    );
    assert_eq!(rows[0].description, "Stays.");
}

async fn concurrent_uploads_to_one_skill_are_serialized(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let id = upload_id(
        &app,
        &ann,
        &[("files", Some("SKILL.md"), SKILL_MD.as_bytes())],
    )
    .await;
    let mut uploads = tokio::task::JoinSet::new();
    for i in 0..8 {
        let version = format!("version {i} ").repeat(1000);
        let (content_type, body) = multipart(&[
            ("skill_id", None, id.as_bytes()),
            ("files", Some("data.txt"), version.as_bytes()),
            ("files", Some(&format!("f{i}.txt")), b"x"),
        ]);
        let request = app
            .request(Method::POST, "/api/v1/skills/upload")
            .bearer_auth(&ann.access)
            .header("content-type", content_type)
            .body(body);
        uploads.spawn(async move { request.send().await.unwrap().status() });
    }
    for status in uploads.join_all().await {
        assert_eq!(status, StatusCode::CREATED);
    }
    let files = app
        .get_json(&format!("/api/v1/skills/{id}/files"), &ann.access)
        .await;
    assert_eq!(files["total"], 10, "{files}");
    // What the index says is what is on disk, file by file.
    let folder = app.data_dir.join("skills").join(&ann.id).join("pdf");
    for file in files["items"].as_array().unwrap() {
        let bytes = std::fs::read(folder.join(file["path"].as_str().unwrap())).unwrap();
        assert_eq!(file["sha256"], sha256_hex(&bytes));
    }
    let data = download(&app, &ann, &id, "data.txt")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        data.starts_with("version ") && data.len() == "version 0 ".len() * 1000,
        "a mix of uploads: {}",
        &data[..40]
    );
    assert!(files_below(&app.data_dir.join("skills/.staging")).is_empty());
}

async fn idle_workspaces_stop_and_come_back(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.skills.workspace_idle_secs = 1).await;
    let ann = app.user("ann").await;
    assert_eq!(
        create(&app, &ann, "pdf", "PDF.").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(app.state.workspaces.live_count(), 1);
    let mut stopped = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if app.state.workspaces.live_count() == 0 {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "the idle workspace never stopped");
    // The next request loads it again from the database and the disk.
    let list = app.get_json("/api/v1/skills", &ann.access).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["file_count"], 1);
    assert_eq!(
        create(&app, &ann, "docx", "Word.").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.get_json("/api/v1/skills", &ann.access).await["total"],
        2
    );
}

/// A front matter built to make the YAML parser work for seconds (brackets nested tens of
/// thousands deep; the parser's time grows with the square of the depth) is refused before any
/// parser sees it, with the limit in the message, while `/health` and another user's MCP calls
/// go on answering. Two accounts attack at once, as in the report that found it.
async fn costly_front_matter_is_refused_without_stalling_the_server(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.rate_limits.uploads_per_user_per_minute = 0).await;
    let (mallory, trudy, ann) = (
        app.user("mallory").await,
        app.user("trudy").await,
        app.user("ann").await,
    );
    app.upload_skill(&ann, &[("SKILL.md", SKILL_MD.as_bytes())])
        .await;
    let (_, token) = app.api_token(&ann, "agent").await;
    let hostile = |body: &str| format!("---\nname: evil\ndescription: d\nx: {body}\n---\n");
    // (front matter, the rule it breaks, words its message must hold)
    let attacks = [
        (
            hostile(&"[".repeat(50_000)),
            "front matter is",
            "at most 16384 bytes",
        ),
        (
            hostile(&format!("{}{}", "[".repeat(7_000), "]".repeat(7_000))),
            "opens 7000 lists",
            "at most 128 are read",
        ),
        (
            hostile(&"{a: ".repeat(40)),
            "nests lists",
            "at most 32 levels",
        ),
    ];
    let mut uploads = tokio::task::JoinSet::new();
    for round in 0..2 {
        for (user, (text, what, limit)) in [&mallory, &trudy]
            .into_iter()
            .cycle()
            .skip(round)
            .zip(attacks.iter())
        {
            let (app_client, base) = (app.client.clone(), app.base.clone());
            let (content_type, body) = multipart(&[("files", Some("SKILL.md"), text.as_bytes())]);
            let (access, what, limit) = (user.access.clone(), *what, *limit);
            uploads.spawn(async move {
                let res = app_client
                    .post(format!("{base}/api/v1/skills/upload"))
                    .bearer_auth(access)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["code"], "skill-md-invalid", "{body}");
                let detail = body["detail"].as_str().unwrap();
                assert!(detail.contains(what) && detail.contains(limit), "{detail}");
            });
        }
    }
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "load_skill", "arguments": {"skill_name": "pdf"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}});
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let health = app.request(Method::GET, "/health").send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let res = app
            .request(Method::POST, "/mcp")
            .bearer_auth(&token)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "load_skill")
            .body(call.to_string())
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["result"]["isError"], false, "{body}");
        slowest = slowest.max(started.elapsed());
    }
    // Every attack was answered, and refused; a parse that ran would have taken seconds each.
    tokio::time::timeout(std::time::Duration::from_secs(30), uploads.join_all())
        .await
        .expect("the hostile uploads were answered");
    // Not a benchmark: a stalled server made these wait about 9 s in the report.
    assert!(
        slowest < std::time::Duration::from_secs(2),
        "/health and another user's tools/call waited {slowest:?} during the attack"
    );
    // Nothing of the attacks was kept.
    let listed = app.get_json("/api/v1/skills", &mallory.access).await;
    assert_eq!(listed["total"], 0, "{listed}");
}

/// Two file names that are one name written two ways (Unicode NFC and NFD: macOS keeps one, and
/// they look the same) are refused, in one upload or across two; names that differ only in case
/// are accepted with a warning (an export unpacked on macOS or Windows would lose one).
async fn file_names_that_collide_elsewhere_are_refused_or_warned(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let (nfc, nfd) = ("caf\u{e9}.md", "cafe\u{301}.md");
    let skill = SKILL_MD.as_bytes();
    let before = files_below(&app.data_dir.join("skills"));
    let res = upload(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), skill),
            ("files", Some(nfc), b"one"),
            ("files", Some(nfd), b"two"),
        ],
    )
    .await;
    let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "path-collision").await;
    assert!(body["detail"].as_str().unwrap().contains("NFD"), "{body}");
    assert_nothing_written(&app, &before);
    // In a zip too, and against a file the skill already has.
    let zip = zip_of(&[("SKILL.md", skill), (nfc, b"one"), (nfd, b"two")]);
    let res = upload(&app, &ann, &[("files", Some("pdf.zip"), &zip)]).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "path-collision").await;
    let id = upload_id(
        &app,
        &ann,
        &[
            ("files", Some("SKILL.md"), skill),
            ("files", Some(nfc), b"one"),
        ],
    )
    .await;
    let res = upload(
        &app,
        &ann,
        &[
            ("skill_id", None, id.as_bytes()),
            ("files", Some(nfd), b"two"),
        ],
    )
    .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "path-collision").await;
    let files = app
        .get_json(&format!("/api/v1/skills/{id}/files"), &ann.access)
        .await;
    assert_eq!(files["total"], 2, "{files}");

    // Case only: accepted, with a warning that says how to fix it, here and when read back.
    let res = upload(
        &app,
        &ann,
        &[
            ("skill_id", None, id.as_bytes()),
            ("files", Some("Notes.md"), b"upper"),
            ("files", Some("notes.md"), b"lower"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{body}");
    assert_eq!(warnings[0]["code"], "path-case-collision");
    assert_eq!(warnings[0]["field"], "files");
    let message = warnings[0]["message"].as_str().unwrap();
    assert!(
        message.contains("Notes.md") && message.contains("notes.md") && message.contains("rename"),
        "{message}"
    );
    let detail = app
        .get_json(&format!("/api/v1/skills/{id}"), &ann.access)
        .await;
    assert_eq!(detail["warnings"], body["warnings"], "{detail}");
    // A skill without such names has none, and says so with an empty list.
    let created = create(&app, &ann, "docx", "Word.").await;
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["warnings"], json!([]));
}

/// A text field given twice (`skill_name`, `skill_id`, `description`) is refused: taking the
/// first or the last would each surprise someone.
async fn text_fields_given_twice_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let skill = SKILL_MD.as_bytes();
    for field in ["skill_name", "description", "skill_id"] {
        let value: &[u8] = match field {
            "skill_name" => b"pdf",
            "description" => b"Two descriptions.",
            _ => b"00000000-0000-0000-0000-000000000000",
        };
        let res = upload(
            &app,
            &ann,
            &[
                (field, None, value),
                ("files", Some("SKILL.md"), skill),
                (field, None, value),
            ],
        )
        .await;
        let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
        assert_eq!(body["errors"][0]["field"], field, "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("more than once"),
            "{body}"
        );
    }
    let listed = app.get_json("/api/v1/skills", &ann.access).await;
    assert_eq!(listed["total"], 0, "{listed}");
}

/// Zips as people make them: macOS Finder's (`__MACOSX/`, `._*`, `.DS_Store`, no folder
/// entries), and a repository's "Download ZIP" holding several skills, which are made or changed
/// together; one broken skill among good ones writes nothing.
async fn zips_as_people_make_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let finder = zip_of(&[
        ("pdf/SKILL.md", SKILL_MD.as_bytes()),
        ("pdf/.DS_Store", b"\0\0\0\x01Bud1\0"),
        ("pdf/scripts/convert.py", b"print('ok')\n"),
        ("__MACOSX/pdf/._SKILL.md", b"\0\x05\x16\x07\0\x02\0\0"),
        (
            "__MACOSX/pdf/scripts/._convert.py",
            b"\0\x05\x16\x07\0\x02\0\0",
        ),
    ]);
    let res = upload(&app, &ann, &[("files", Some("pdf.zip"), &finder)]).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["uploaded_files"],
        json!(["SKILL.md", "scripts/convert.py"]),
        "{body}"
    );
    assert_eq!(body["ignored"].as_array().unwrap().len(), 3, "{body}");
    assert_eq!(body["warnings"], json!([]), "{body}");

    let skill = |name: &str| skill_md(name, &format!("The {name} skill."));
    let (alpha, beta, pdf) = (skill("alpha"), skill("beta"), skill("pdf"));
    let repo = zip_of(&[
        ("tools-main/README.md", b"# Our skills"),
        ("tools-main/skills/alpha/SKILL.md", alpha.as_bytes()),
        (
            "tools-main/skills/alpha/reference/SKILL.md",
            b"an example, part of alpha",
        ),
        ("tools-main/skills/beta/SKILL.md", beta.as_bytes()),
        ("tools-main/skills/pdf/SKILL.md", pdf.as_bytes()),
        ("tools-main/skills/pdf/extra.md", b"new"),
    ]);
    let res = upload(&app, &ann, &[("files", Some("tools-main.zip"), &repo)]).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let made: Vec<(&str, bool)> = body["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["created"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        made,
        [("alpha", true), ("beta", true), ("pdf", false)],
        "{body}"
    );
    assert!(
        body.get("id").is_none(),
        "several skills have no top-level skill: {body}"
    );
    assert_eq!(body["ignored"], json!(["tools-main/README.md"]));
    let listed = app.get_json("/api/v1/skills", &ann.access).await;
    assert_eq!(listed["total"], 3, "{listed}");
    let pdf_id = listed["items"][2]["id"].as_str().unwrap().to_owned();
    let files = app
        .get_json(&format!("/api/v1/skills/{pdf_id}/files"), &ann.access)
        .await;
    assert_eq!(
        files["total"], 3,
        "the upload added to pdf and kept its files: {files}"
    );
    let alpha_files = app
        .get_json(
            &format!(
                "/api/v1/skills/{}/files",
                listed["items"][0]["id"].as_str().unwrap()
            ),
            &ann.access,
        )
        .await;
    assert_eq!(alpha_files["total"], 2, "{alpha_files}");

    // One broken skill among good ones: nothing of the archive is written.
    let before = files_below(&app.data_dir.join("skills"));
    let broken = zip_of(&[
        ("r/gamma/SKILL.md", skill("gamma").as_bytes()),
        (
            "r/delta/SKILL.md",
            b"---\nname: delta\n---\nno description\n",
        ),
        ("r/beta/SKILL.md", skill("beta").as_bytes()),
        ("r/beta/new.md", b"new"),
    ]);
    let res = upload(&app, &ann, &[("files", Some("r.zip"), &broken)]).await;
    let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "skill-md-invalid").await;
    assert!(
        body["detail"].as_str().unwrap().contains("description"),
        "{body}"
    );
    assert_nothing_written(&app, &before);
    assert_eq!(
        app.get_json("/api/v1/skills", &ann.access).await["total"],
        3
    );
    // Two skills of one archive with one name: nothing either.
    let two = zip_of(&[
        ("r/gamma/SKILL.md", skill("gamma").as_bytes()),
        ("r/delta/SKILL.md", skill("delta").as_bytes()),
        ("r/duplicate/SKILL.md", skill("gamma").as_bytes()),
    ]);
    let res = upload(&app, &ann, &[("files", Some("r.zip"), &two)]).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "duplicate-skill").await;
    assert_nothing_written(&app, &before);
    // A zip of several skills names each by its SKILL.md: skill_name makes no sense with it.
    let res = upload(
        &app,
        &ann,
        &[
            ("skill_name", None, b"alpha"),
            ("files", Some("tools-main.zip"), &repo),
        ],
    )
    .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "several-skills").await;
}

/// The forms of SKILL.md found in public skill repositories, written here after their shapes
/// (`tests/corpus/`, one folder per form): every one is accepted, with the warnings
/// `tests/corpus/expected.json` lists. `tests/interop/compare_original.py` checks the same
/// folder against the original server's text.
async fn the_corpus_of_skill_md_forms_is_accepted_with_its_warnings(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("expected.json")).unwrap())
            .unwrap();
    let expected = expected.as_object().unwrap();
    assert!(
        expected.len() >= 25,
        "the corpus has {} forms",
        expected.len()
    );
    for (folder, want) in expected {
        let text = std::fs::read(corpus.join(folder).join("SKILL.md")).unwrap();
        // As people upload a skill's folder: zipped, in its folder.
        let path = format!("{folder}/SKILL.md");
        let zip = zip_of(&[(path.as_str(), &text)]);
        let res = upload(&app, &ann, &[("files", Some("skill.zip"), &zip)]).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{folder}: {body}");
        let mut codes: Vec<&str> = body["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["code"].as_str().unwrap())
            .collect();
        codes.sort_unstable();
        let mut wanted: Vec<&str> = want["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        wanted.sort_unstable();
        assert_eq!(codes, wanted, "{folder}: {body}");
        for warning in body["warnings"].as_array().unwrap() {
            assert!(
                warning["message"].as_str().unwrap().len() > 30,
                "{folder}: a warning must say how to fix it: {warning}"
            );
        }
        // Read back as stored: SKILL.md byte for byte.
        let id = body["id"].as_str().unwrap();
        let stored = download(&app, &ann, id, "SKILL.md")
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(stored.as_ref(), text.as_slice(), "{folder}");
    }
    let listed = app.get_json("/api/v1/skills?limit=100", &ann.access).await;
    assert_eq!(listed["total"], expected.len(), "{listed}");
}
