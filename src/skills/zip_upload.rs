//! An uploaded zip archive turned into skill files, by rejection: every entry name must already be
//! an acceptable [`SkillPath`], only regular files and folders are accepted, and every entry is
//! decompressed through a cap, whatever its header claims, so a zip bomb stops at the limit.

use std::collections::HashSet;
use std::io::{Cursor, Read};

use zip::ZipArchive;
use zip::result::ZipError;

use super::Cancel;
use super::files::{ExecBits, Limits, SKILL_MD, UploadError};
use crate::domain::SkillPath;

/// File-type bits of a Unix mode, as zip archives made on Unix store them.
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;

/// Signature of a central-directory file header.
const CENTRAL_HEADER_SIGNATURE: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];
const CENTRAL_HEADER_LEN: usize = 46;

/// The most skills one archive may hold.
pub const MAX_SKILLS_PER_ARCHIVE: usize = 100;

/// Entries that other systems add to archives and that are no one's content: macOS Finder's
/// `__MACOSX/` folder and `._*` AppleDouble files, `.DS_Store`, Windows' `Thumbs.db` and
/// `desktop.ini`.
pub(crate) fn is_litter(path: &str) -> bool {
    let mut components = path.split('/');
    let name = path.rsplit('/').next().unwrap_or(path);
    components.any(|c| c == "__MACOSX")
        || name.starts_with("._")
        || matches!(name, ".DS_Store" | "Thumbs.db" | "desktop.ini")
}

/// One skill found in an archive.
#[derive(Debug)]
pub struct UnpackedSkill {
    /// The name of the folder it came in; `None` when its `SKILL.md` is at the archive's root.
    pub folder: Option<String>,
    /// That folder's path in the archive, `""` for its root.
    pub root: String,
    /// Its files, with their paths inside the skill.
    pub files: Vec<(SkillPath, Vec<u8>)>,
    /// The executable bit of each file whose entry says (an archive made on Unix keeps each
    /// entry's mode: `zip`, Finder, `git archive`); entries without a mode are not in it.
    pub executable: ExecBits,
}

/// What an archive holds.
#[derive(Debug)]
pub struct Unpacked {
    /// Every skill, by the path of its folder in the archive.
    pub skills: Vec<UnpackedSkill>,
    /// Entries left out: other systems' litter, and files outside every skill (a README beside
    /// them, say).
    pub ignored: Vec<String>,
}

/// The skills in a zip archive held in memory.
///
/// Every folder holding a `SKILL.md` is a skill (the archive's root too), unless it lies inside
/// another skill's folder: a skill's sub-folders are part of it. So a skill zipped alone, a skill
/// in one top folder, and a repository downloaded as a zip (`repo-main/skills/a/SKILL.md`,
/// `repo-main/skills/b/SKILL.md`, a README beside them) all unpack as people mean them. Each
/// skill's limits apply to it alone; `max_unpacked_bytes` bounds the whole archive once
/// decompressed, and at most [`MAX_SKILLS_PER_ARCHIVE`] skills are read. Other systems' litter
/// (`__MACOSX/`, `._*`, `.DS_Store`) is left out, as are files outside every skill; folder entries
/// are not needed (folders are made for the files in them).
pub fn unpack(
    bytes: &[u8],
    limits: &Limits,
    max_unpacked_bytes: u64,
    cancel: &Cancel,
) -> Result<Unpacked, UploadError> {
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(zip_error)?;
    check_no_duplicates(bytes, &archive)?;

    // First every entry's name and kind, without decompressing anything.
    let mut entries: Vec<(usize, SkillPath)> = Vec::new();
    let mut ignored = Vec::new();
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(zip_error)?;
        let name = entry.name();
        // A folder entry is its path with exactly one `/` after it; anything else about the name
        // is checked as for a file.
        let (checked, is_folder) = match name.strip_suffix('/') {
            Some(folder) => (folder, true),
            None => (name, false),
        };
        let path = SkillPath::parse(checked).map_err(|reason| UploadError::InvalidPath {
            path: name.to_owned(),
            reason,
        })?;
        if is_litter(path.as_str()) {
            if !is_folder {
                ignored.push(path.as_str().to_owned());
            }
            continue;
        }
        let file_type = entry.unix_mode().map(|mode| mode & S_IFMT).unwrap_or(0);
        let expected = if is_folder { S_IFDIR } else { S_IFREG };
        // Archives not made on Unix carry no type bits (0); those entries are what their name says.
        if file_type != 0 && file_type != expected {
            return Err(UploadError::NotARegularFile {
                path: name.to_owned(),
            });
        }
        if entry.encrypted() {
            return Err(UploadError::Zip(format!(
                "{name:?} is encrypted, which is not supported"
            )));
        }
        if !is_folder {
            entries.push((index, path));
        }
    }

    gather(
        entries,
        ignored,
        limits,
        max_unpacked_bytes,
        cancel,
        UploadError::Zip,
        "archive",
        |index, cap| {
            let entry = archive.by_index(index).map_err(zip_error)?;
            let executable = entry
                .unix_mode()
                .filter(|m| *m != 0)
                .map(|m| m & 0o111 != 0);
            let mut content = Vec::new();
            entry
                .take(cap)
                .read_to_end(&mut content)
                .map_err(|e| UploadError::Zip(format!("cannot be decompressed: {e}")))?;
            Ok((content, executable))
        },
    )
}

/// The skills among `entries` (files by their paths, each with a key `read` takes): every folder
/// with a `SKILL.md` that no other such folder holds, the root too; files outside every skill go
/// to `ignored`. Each skill's limits apply to it alone, `max_unpacked_bytes` to all together, and
/// at most [`MAX_SKILLS_PER_ARCHIVE`] skills are read. `read` gives a file's content, at most
/// `cap` bytes of it (one over the limit proves it too large without reading further), and its
/// executable bit when the source knows it; `fail` makes the error of a source of its kind, and
/// `what` names that kind in messages. Shared by zip archives and Git repositories.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gather<K>(
    entries: Vec<(K, SkillPath)>,
    mut ignored: Vec<String>,
    limits: &Limits,
    max_unpacked_bytes: u64,
    cancel: &Cancel,
    fail: fn(String) -> UploadError,
    what: &str,
    mut read: impl FnMut(K, u64) -> Result<(Vec<u8>, Option<bool>), UploadError>,
) -> Result<Unpacked, UploadError> {
    // The skills' folders: every folder with a SKILL.md that no other such folder holds.
    let mut roots: Vec<String> = entries
        .iter()
        .filter_map(|(_, path)| {
            let path = path.as_str();
            if path == SKILL_MD {
                Some(String::new())
            } else {
                path.strip_suffix(SKILL_MD)
                    .and_then(|dir| dir.strip_suffix('/'))
                    .map(str::to_owned)
            }
        })
        .collect();
    roots.sort_by_key(String::len);
    let mut kept: Vec<String> = Vec::new();
    for root in roots {
        if !kept.iter().any(|outer| inside(&root, outer)) {
            kept.push(root);
        }
    }
    kept.sort();
    if kept.is_empty() {
        return Err(UploadError::MissingSkillMd);
    }
    if kept.len() > MAX_SKILLS_PER_ARCHIVE {
        return Err(fail(format!(
            "the {what} holds {} skills; at most {MAX_SKILLS_PER_ARCHIVE} are read at once",
            kept.len()
        )));
    }
    // Each file with its skill (by index in `kept`), or left out.
    let mut wanted: Vec<(K, usize, SkillPath)> = Vec::new();
    let mut counts = vec![0usize; kept.len()];
    for (index, path) in entries {
        match kept.iter().position(|root| inside(path.as_str(), root)) {
            Some(skill) => {
                counts[skill] += 1;
                wanted.push((index, skill, path));
            }
            None => ignored.push(path.as_str().to_owned()),
        }
    }
    if counts.iter().any(|&n| n > limits.max_skill_files) {
        return Err(UploadError::TooManyFiles {
            limit: limits.max_skill_files,
        });
    }

    // Then the content, each entry through a cap one byte over the limit: reaching it proves the
    // entry too large without reading further, whatever sizes the headers claim.
    let mut totals = vec![0u64; kept.len()];
    let mut unpacked = 0u64;
    let mut skills: Vec<UnpackedSkill> = kept
        .iter()
        .map(|root| UnpackedSkill {
            folder: root
                .rsplit('/')
                .next()
                .filter(|f| !f.is_empty())
                .map(str::to_owned),
            root: root.clone(),
            files: Vec::new(),
            executable: ExecBits::new(),
        })
        .collect();
    for (index, skill, path) in wanted {
        cancel.check()?;
        let (content, executable) =
            read(index, limits.max_file_bytes.saturating_add(1)).map_err(|e| match e {
                UploadError::Zip(why) => UploadError::Zip(format!("{path:?} {why}")),
                other => other,
            })?;
        let size = content.len() as u64;
        if size > limits.max_file_bytes {
            return Err(UploadError::FileTooLarge {
                path: path.to_string(),
                limit: limits.max_file_bytes,
            });
        }
        totals[skill] = totals[skill].saturating_add(size);
        if totals[skill] > limits.max_skill_bytes {
            return Err(UploadError::SkillTooLarge {
                limit: limits.max_skill_bytes,
            });
        }
        unpacked = unpacked.saturating_add(size);
        if unpacked > max_unpacked_bytes {
            return Err(fail(format!(
                "the {what} unpacks to more than {max_unpacked_bytes} bytes \
                 (skills.max_unpacked_bytes)"
            )));
        }
        let root = &kept[skill];
        let inner = if root.is_empty() {
            path
        } else {
            // A part of a valid path is valid; parsing again keeps the type honest.
            SkillPath::parse(&path.as_str()[root.len() + 1..]).map_err(|reason| {
                UploadError::InvalidPath {
                    path: path.to_string(),
                    reason,
                }
            })?
        };
        if let Some(executable) = executable {
            skills[skill]
                .executable
                .insert(inner.as_str().to_owned(), executable);
        }
        skills[skill].files.push((inner, content));
    }
    Ok(Unpacked { skills, ignored })
}

/// Whether `path` is `folder` or lies inside it (`""` is the archive's root, which holds all).
fn inside(path: &str, folder: &str) -> bool {
    folder.is_empty()
        || path
            .strip_prefix(folder)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The zip crate indexes entries by name and silently keeps one of two entries with the same
/// name, so duplicates are found in the central directory itself: one name per file header.
fn check_no_duplicates(
    bytes: &[u8],
    archive: &ZipArchive<Cursor<&[u8]>>,
) -> Result<(), UploadError> {
    let inconsistent = || UploadError::Zip("the central directory is inconsistent".to_owned());
    let mut offset =
        usize::try_from(archive.central_directory_start()).map_err(|_| inconsistent())?;
    let mut seen: HashSet<&[u8]> = HashSet::new();
    while let Some(header) = bytes.get(offset..offset + CENTRAL_HEADER_LEN) {
        if header[..4] != CENTRAL_HEADER_SIGNATURE {
            break;
        }
        let field = |at: usize| usize::from(u16::from_le_bytes([header[at], header[at + 1]]));
        let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
        let name_start = offset + CENTRAL_HEADER_LEN;
        let name = bytes
            .get(name_start..name_start + name_len)
            .ok_or_else(inconsistent)?;
        if !seen.insert(name) {
            return Err(UploadError::DuplicatePath {
                path: String::from_utf8_lossy(name).into_owned(),
            });
        }
        offset = name_start + name_len + extra_len + comment_len;
    }
    // Different raw names can still decode to one name (a Unicode path field, an 8-bit code
    // page); then the crate lists fewer entries than the directory holds.
    if seen.len() != archive.len() {
        return Err(UploadError::DuplicatePath {
            path: "(two entries whose names decode alike)".to_owned(),
        });
    }
    Ok(())
}

fn zip_error(e: ZipError) -> UploadError {
    match e {
        ZipError::UnsupportedArchive(what) => {
            UploadError::Zip(format!("unsupported archive: {what}"))
        }
        other => UploadError::Zip(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};
    use zip::CompressionMethod;
    use zip::write::{SimpleFileOptions, ZipWriter};

    const SKILL: &[u8] = b"---\nname: demo\ndescription: A demo skill.\n---\n# Demo\n";

    fn limits() -> Limits {
        Limits {
            max_file_bytes: 1024 * 1024,
            max_skill_bytes: 4 * 1024 * 1024,
            max_skill_files: 100,
        }
    }

    fn options() -> SimpleFileOptions {
        SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
    }

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content) in entries {
            if let Some(folder) = name.strip_suffix('/') {
                zip.add_directory(folder, options()).unwrap();
            } else {
                zip.start_file(*name, options()).unwrap();
                zip.write_all(content).unwrap();
            }
        }
        zip.finish().unwrap().into_inner()
    }

    /// The archive's one skill's files.
    fn unpack_one(bytes: &[u8], limits: &Limits) -> Result<Vec<(SkillPath, Vec<u8>)>, UploadError> {
        let mut unpacked = unpack(bytes, limits, u64::MAX, &Cancel::default())?;
        assert_eq!(unpacked.skills.len(), 1, "{unpacked:?}");
        Ok(unpacked.skills.remove(0).files)
    }

    fn paths(files: &[(SkillPath, Vec<u8>)]) -> Vec<&str> {
        files.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn skill_md_at_the_root_keeps_paths() {
        let zip = archive(&[
            ("SKILL.md", SKILL),
            ("scripts/", b""),
            ("scripts/run.py", b"print(1)\n"),
        ]);
        let files = unpack_one(&zip, &limits()).unwrap();
        assert_eq!(paths(&files), ["SKILL.md", "scripts/run.py"]);
        assert_eq!(files[1].1, b"print(1)\n");
    }

    #[test]
    fn one_top_folder_is_stripped() {
        let zip = archive(&[
            ("demo/", b""),
            ("demo/SKILL.md", SKILL),
            ("demo/docs/", b""),
            ("demo/docs/ref.md", b"ref"),
        ]);
        let files = unpack_one(&zip, &limits()).unwrap();
        assert_eq!(paths(&files), ["SKILL.md", "docs/ref.md"]);
        assert_eq!(files[0].1, SKILL);
    }

    #[test]
    fn archives_without_a_skill_md_are_refused() {
        for entries in [
            &[("README.md", &b"x"[..])][..],
            &[("a/", &b""[..]), ("a/b/SKILL.txt", b"x")][..],
            &[("__MACOSX/a/SKILL.md", SKILL)][..],
            &[][..],
        ] {
            let err =
                unpack(&archive(entries), &limits(), u64::MAX, &Cancel::default()).unwrap_err();
            assert!(
                matches!(err, UploadError::MissingSkillMd),
                "{entries:?}: {err}"
            );
        }
    }

    /// As macOS Finder zips a folder: `__MACOSX/` with AppleDouble `._*` copies, `.DS_Store`,
    /// and no folder entries (as many tools write them).
    #[test]
    fn finder_litter_is_left_out() {
        let zip = archive(&[
            ("demo/SKILL.md", SKILL),
            ("demo/.DS_Store", b"\0\0\0\x01Bud1"),
            ("demo/scripts/run.sh", b"echo hi\n"),
            ("__MACOSX/demo/._SKILL.md", b"\0\x05\x16\x07"),
            ("__MACOSX/demo/scripts/._run.sh", b"\0\x05\x16\x07"),
            ("demo/._notes.md", b"\0\x05\x16\x07"),
            ("Thumbs.db", b"x"),
        ]);
        let unpacked = unpack(&zip, &limits(), u64::MAX, &Cancel::default()).unwrap();
        assert_eq!(unpacked.skills.len(), 1);
        assert_eq!(unpacked.skills[0].folder.as_deref(), Some("demo"));
        assert_eq!(
            paths(&unpacked.skills[0].files),
            ["SKILL.md", "scripts/run.sh"]
        );
        assert_eq!(unpacked.ignored.len(), 5, "{:?}", unpacked.ignored);
    }

    /// A repository downloaded as a zip: several skills, a README beside them; a SKILL.md inside
    /// a skill's folder is part of that skill.
    #[test]
    fn an_archive_holds_every_skill_in_it() {
        let zip = archive(&[
            ("repo-main/README.md", b"readme"),
            ("repo-main/skills/b/SKILL.md", SKILL),
            (
                "repo-main/skills/b/templates/SKILL.md",
                b"a template, not a skill",
            ),
            ("repo-main/skills/a/SKILL.md", SKILL),
            ("repo-main/skills/a/ref.md", b"ref"),
            ("repo-main/docs/guide.md", b"guide"),
        ]);
        let unpacked = unpack(&zip, &limits(), u64::MAX, &Cancel::default()).unwrap();
        let found: Vec<(Option<&str>, Vec<&str>)> = unpacked
            .skills
            .iter()
            .map(|s| (s.folder.as_deref(), paths(&s.files)))
            .collect();
        assert_eq!(
            found,
            [
                (Some("a"), vec!["SKILL.md", "ref.md"]),
                (Some("b"), vec!["SKILL.md", "templates/SKILL.md"]),
            ]
        );
        assert_eq!(
            unpacked.ignored,
            ["repo-main/README.md", "repo-main/docs/guide.md"]
        );
        // A SKILL.md at the root makes everything one skill.
        let zip = archive(&[("SKILL.md", SKILL), ("a/SKILL.md", SKILL), ("b/x", b"x")]);
        assert_eq!(unpack_one(&zip, &limits()).unwrap().len(), 3);
        // Each skill has its limits; the archive is bounded as a whole.
        let zip = archive(&[
            ("a/SKILL.md", SKILL),
            ("b/SKILL.md", SKILL),
            ("b/big", &[1; 600]),
        ]);
        let err = unpack(&zip, &limits(), 700, &Cancel::default()).unwrap_err();
        assert!(
            err.to_string().contains("skills.max_unpacked_bytes"),
            "{err}"
        );
        assert!(unpack(&zip, &limits(), 800, &Cancel::default()).is_ok());
    }

    #[test]
    fn unsafe_names_are_rejected_not_rewritten() {
        for name in [
            "../x",
            "a/../../x",
            "/abs/x",
            "C:\\x",
            "a\\b",
            "C:x",
            "a//b",
            "./a",
            "a\0b",
        ] {
            let zip = archive(&[("SKILL.md", SKILL), (name, b"x")]);
            let err = unpack_one(&zip, &limits()).unwrap_err();
            match &err {
                UploadError::InvalidPath { path, .. } => assert_eq!(path, name),
                other => panic!("{name:?}: {other}"),
            }
            assert_eq!(err.code(), "invalid-path");
        }
        // A folder entry loses exactly one `/`.
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("SKILL.md", options()).unwrap();
        zip.write_all(SKILL).unwrap();
        zip.start_file(
            "dir//",
            SimpleFileOptions::default().unix_permissions(0o755),
        )
        .unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        let err = unpack_one(&bytes, &limits()).unwrap_err();
        assert!(
            matches!(&err, UploadError::InvalidPath { path, .. } if path == "dir//"),
            "{err}"
        );
    }

    #[test]
    fn symlinks_and_special_files_are_refused() {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("SKILL.md", options()).unwrap();
        zip.write_all(SKILL).unwrap();
        zip.add_symlink("passwd", "/etc/passwd", options()).unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        let err = unpack_one(&bytes, &limits()).unwrap_err();
        assert!(
            matches!(&err, UploadError::NotARegularFile { path } if path == "passwd"),
            "{err}"
        );

        // FIFO, character device, block device, socket; and a file entry that says "folder".
        for mode in [0o010_644, 0o020_644, 0o060_644, 0o140_644, 0o040_755] {
            let mut bytes = archive(&[("SKILL.md", SKILL), ("special", b"")]);
            set_unix_mode(&mut bytes, "special", mode);
            let err = unpack_one(&bytes, &limits()).unwrap_err();
            assert!(
                matches!(err, UploadError::NotARegularFile { .. }),
                "{mode:o}: {err}"
            );
        }
        // A folder entry that says "regular file".
        let mut bytes = archive(&[("SKILL.md", SKILL), ("dir/", b"")]);
        set_unix_mode(&mut bytes, "dir/", 0o100_644);
        let err = unpack_one(&bytes, &limits()).unwrap_err();
        assert!(matches!(err, UploadError::NotARegularFile { .. }), "{err}");
    }

    /// Rewrites the Unix mode of an entry in the central directory (`ZipWriter` only writes
    /// regular files, folders and symlinks).
    fn set_unix_mode(bytes: &mut [u8], name: &str, mode: u32) {
        let at = (0..bytes.len() - CENTRAL_HEADER_LEN)
            .find(|&at| {
                bytes[at..at + 4] == CENTRAL_HEADER_SIGNATURE
                    && bytes[at + CENTRAL_HEADER_LEN..].starts_with(name.as_bytes())
            })
            .unwrap();
        bytes[at + 5] = 3; // made by Unix
        bytes[at + 38..at + 42].copy_from_slice(&(mode << 16).to_le_bytes());
    }

    #[test]
    fn a_zip_bomb_stops_at_the_cap() {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("SKILL.md", options()).unwrap();
        zip.write_all(SKILL).unwrap();
        zip.start_file("zeros.bin", options().large_file(true))
            .unwrap();
        let chunk = vec![0u8; 1024 * 1024];
        for _ in 0..200 {
            zip.write_all(&chunk).unwrap();
        }
        let bytes = zip.finish().unwrap().into_inner();
        assert!(bytes.len() < 2 * 1024 * 1024, "{} bytes", bytes.len());

        let started = Instant::now();
        let err = unpack_one(&bytes, &limits()).unwrap_err();
        assert!(
            matches!(&err, UploadError::FileTooLarge { path, limit } if path == "zeros.bin" && *limit == 1024 * 1024),
            "{err}"
        );
        // Decompressing 200 MiB would take far longer than reading 1 MiB.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn the_skill_total_and_file_count_are_capped() {
        let small = Limits {
            max_file_bytes: 100,
            max_skill_bytes: 150,
            max_skill_files: 3,
        };
        let zip = archive(&[("SKILL.md", &SKILL[..50]), ("a", &[1; 60]), ("b", &[2; 60])]);
        let err = unpack_one(&zip, &small).unwrap_err();
        assert!(
            matches!(err, UploadError::SkillTooLarge { limit: 150 }),
            "{err}"
        );

        // Folder entries do not count as files.
        let zip = archive(&[("d/", b""), ("SKILL.md", SKILL), ("a", b""), ("d/b", b"")]);
        assert_eq!(
            unpack_one(
                &zip,
                &Limits {
                    max_file_bytes: 1000,
                    ..small
                },
            )
            .unwrap()
            .len(),
            3
        );
        let zip = archive(&[("SKILL.md", SKILL), ("a", b""), ("b", b""), ("c", b"")]);
        let err = unpack_one(
            &zip,
            &Limits {
                max_file_bytes: 1000,
                ..small
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, UploadError::TooManyFiles { limit: 3 }),
            "{err}"
        );
    }

    /// An archive with two entries of the same name, which `ZipWriter` refuses to write: the
    /// second name is patched in the local and central headers.
    fn archive_with_duplicate() -> Vec<u8> {
        let mut bytes = archive(&[("SKILL.md", SKILL), ("a.txt", b"one"), ("b.txt", b"two")]);
        let mut patched = 0;
        for at in 0..bytes.len() - 5 {
            if &bytes[at..at + 5] == b"b.txt" {
                bytes[at] = b'a';
                patched += 1;
            }
        }
        assert_eq!(patched, 2);
        bytes
    }

    #[test]
    fn duplicate_entries_are_refused() {
        let err = unpack_one(&archive_with_duplicate(), &limits()).unwrap_err();
        assert!(
            matches!(&err, UploadError::DuplicatePath { path } if path == "a.txt"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_archives_are_refused() {
        for bytes in [
            b"".to_vec(),
            b"not a zip at all".to_vec(),
            archive(&[("SKILL.md", SKILL)])[..30].to_vec(),
        ] {
            let err = unpack_one(&bytes, &limits()).unwrap_err();
            assert!(matches!(err, UploadError::Zip(_)), "{err}");
            assert_eq!(err.code(), "invalid-zip");
        }
        // Flipped bits inside the compressed data: the checksum (or the inflater) catches it.
        let mut bytes = archive(&[("SKILL.md", SKILL), ("data.txt", &[b'x'; 5000])]);
        let data = bytes.windows(8).position(|w| w == b"data.txt").unwrap() + 8;
        for b in &mut bytes[data..data + 8] {
            *b ^= 0xff;
        }
        let err = unpack_one(&bytes, &limits()).unwrap_err();
        assert!(matches!(err, UploadError::Zip(_)), "{err}");
    }
}
