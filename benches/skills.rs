//! Skill uploads and listings against the release binary (SQLite, default settings).
//!
//! `cargo bench --bench skills`: registers a user, uploads 100 skills one after another (a
//! `SKILL.md`, a reference document and two scripts each, about 12 KiB, as multipart files), then
//! one zip upload of the same shape, and lists the 100 skills (`limit=100`) 50 times.
//! Figures, not assertions.

#![allow(clippy::expect_used, clippy::print_stdout, clippy::unwrap_used)]

mod support;

use std::io::Write as _;
use std::time::Instant;

use serde_json::Value;
use support::{ms, register_and_login, rss_kib, start, summary};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

const BOUNDARY: &str = "benchBoundary0123456789";

fn multipart(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (path, data) in files {
        write!(
            body,
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path}\"\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{BOUNDARY}--\r\n").unwrap();
    body
}

fn skill_files(name: &str) -> Vec<(String, Vec<u8>)> {
    let skill_md = format!(
        "---\nname: {name}\ndescription: >\n  Benchmark skill {name}: converts, checks and summarises documents of\n  several kinds. Use it when the user asks about {name}.\nlicense: MIT\n---\n# {name}\n\n{}",
        "Step by step instructions for the agent.\n".repeat(40)
    );
    vec![
        ("SKILL.md".to_owned(), skill_md.into_bytes()),
        (
            "references/guide.md".to_owned(),
            "Reference material line.\n".repeat(300).into_bytes(),
        ),
        (
            "scripts/convert.py".to_owned(),
            "print('converting')\n".repeat(60).into_bytes(),
        ),
        (
            "scripts/check.sh".to_owned(),
            "echo checking\n".repeat(40).into_bytes(),
        ),
    ]
}

async fn post_upload(
    client: &reqwest::Client,
    base: &str,
    access: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    client
        .post(format!("{base}/api/v1/skills/upload"))
        .bearer_auth(access)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn run() {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    let (server, _) = start(&client).await;
    let base = &server.base;
    let access = register_and_login(&client, base).await;

    let mut uploads = Vec::new();
    let total = Instant::now();
    for i in 0..100 {
        let body = multipart(&skill_files(&format!("skill-{i:03}")));
        let t = Instant::now();
        let res = post_upload(&client, base, &access, body).await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        uploads.push(t.elapsed());
    }
    println!(
        "upload (multipart, 4 files, ~12 KiB), 100 new skills one after another: {}; all 100 in {:.0} ms",
        summary(uploads),
        ms(total.elapsed())
    );

    let zip = {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        for (path, data) in skill_files("zipped") {
            zip.start_file(format!("zipped/{path}"), options).unwrap();
            zip.write_all(&data).unwrap();
        }
        zip.finish().unwrap().into_inner()
    };
    let mut zipped = Vec::new();
    for _ in 0..20 {
        let body = multipart(&[("zipped.zip".to_owned(), zip.clone())]);
        let t = Instant::now();
        let res = post_upload(&client, base, &access, body).await;
        assert_eq!(res.status(), 201);
        zipped.push(t.elapsed());
    }
    println!(
        "upload (zip, replacing one skill's files) x20: {}",
        summary(zipped)
    );

    let mut lists = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let res = client
            .get(format!("{base}/api/v1/skills?limit=100"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 100);
        lists.push(t.elapsed());
    }
    println!("list 100 skills (limit=100) x50: {}", summary(lists));
    println!(
        "server RSS with 101 skills indexed: {} KiB",
        rss_kib(server.child.id())
    );
}
