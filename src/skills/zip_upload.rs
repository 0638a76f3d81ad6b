//! An uploaded zip archive turned into skill files, by rejection: every entry name must already be
//! an acceptable [`SkillPath`], only regular files and folders are accepted, and every entry is
//! decompressed through a cap, whatever its header claims, so a zip bomb stops at the limit.

use std::collections::HashSet;
use std::io::{Cursor, Read};

use zip::ZipArchive;
use zip::result::ZipError;

use super::Cancel;
use super::files::{Limits, SKILL_MD, UploadError};
use crate::domain::SkillPath;

/// File-type bits of a Unix mode, as zip archives made on Unix store them.
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;

/// Signature of a central-directory file header.
const CENTRAL_HEADER_SIGNATURE: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];
const CENTRAL_HEADER_LEN: usize = 46;

/// The files of a skill from a zip archive held in memory, with their paths inside the skill.
///
/// `SKILL.md` must be at the archive's root, or every entry must lie in one top folder holding a
/// `SKILL.md`, in which case that folder is stripped from the paths. Folder entries are not
/// returned (folders are created for the files in them).
pub fn unpack(
    bytes: &[u8],
    limits: &Limits,
    cancel: &Cancel,
) -> Result<Vec<(SkillPath, Vec<u8>)>, UploadError> {
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(zip_error)?;
    check_no_duplicates(bytes, &archive)?;

    // First every entry's name and kind, without decompressing anything.
    let mut wanted: Vec<(usize, SkillPath)> = Vec::new();
    let mut folders: Vec<SkillPath> = Vec::new();
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
        if is_folder {
            folders.push(path);
        } else {
            wanted.push((index, path));
        }
    }
    if wanted.len() > limits.max_skill_files {
        return Err(UploadError::TooManyFiles {
            limit: limits.max_skill_files,
        });
    }

    // Then the content, each entry through a cap one byte over the limit: reaching it proves the
    // entry too large without reading further, whatever sizes the headers claim.
    let mut total = 0u64;
    let mut files = Vec::with_capacity(wanted.len());
    for (index, path) in wanted {
        cancel.check()?;
        let entry = archive.by_index(index).map_err(zip_error)?;
        let mut content = Vec::new();
        entry
            .take(limits.max_file_bytes.saturating_add(1))
            .read_to_end(&mut content)
            .map_err(|e| UploadError::Zip(format!("{path:?} cannot be decompressed: {e}")))?;
        let size = content.len() as u64;
        if size > limits.max_file_bytes {
            return Err(UploadError::FileTooLarge {
                path: path.to_string(),
                limit: limits.max_file_bytes,
            });
        }
        total = total.saturating_add(size);
        if total > limits.max_skill_bytes {
            return Err(UploadError::SkillTooLarge {
                limit: limits.max_skill_bytes,
            });
        }
        files.push((path, content));
    }

    layout(files, &folders)
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

/// Applies the accepted layouts: `SKILL.md` at the root, or everything in one top folder that
/// holds `SKILL.md` (the folder is then stripped).
fn layout(
    files: Vec<(SkillPath, Vec<u8>)>,
    folders: &[SkillPath],
) -> Result<Vec<(SkillPath, Vec<u8>)>, UploadError> {
    if files.iter().any(|(path, _)| path.as_str() == SKILL_MD) {
        return Ok(files);
    }
    let Some(top) = files
        .first()
        .and_then(|(path, _)| path.as_str().split_once('/'))
        .map(|(top, _)| top.to_owned())
    else {
        return Err(UploadError::MissingSkillMd);
    };
    let prefix = format!("{top}/");
    let all_inside = files
        .iter()
        .all(|(path, _)| path.as_str().starts_with(&prefix))
        && folders
            .iter()
            .all(|path| path.as_str() == top || path.as_str().starts_with(&prefix));
    let skill_md = format!("{prefix}{SKILL_MD}");
    if !all_inside || !files.iter().any(|(path, _)| path.as_str() == skill_md) {
        return Err(UploadError::MissingSkillMd);
    }
    files
        .into_iter()
        .map(|(path, content)| {
            let inner = &path.as_str()[prefix.len()..];
            // A part of a valid path is valid; parsing again keeps the type honest.
            let inner = SkillPath::parse(inner).map_err(|reason| UploadError::InvalidPath {
                path: path.to_string(),
                reason,
            })?;
            Ok((inner, content))
        })
        .collect()
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
        let files = unpack(&zip, &limits(), &Cancel::default()).unwrap();
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
        let files = unpack(&zip, &limits(), &Cancel::default()).unwrap();
        assert_eq!(paths(&files), ["SKILL.md", "docs/ref.md"]);
        assert_eq!(files[0].1, SKILL);
    }

    #[test]
    fn other_layouts_have_no_skill_md() {
        for entries in [
            &[("README.md", &b"x"[..])][..],
            &[("a/SKILL.md", SKILL), ("b/other.md", b"x")][..],
            &[("a/SKILL.md", SKILL), ("stray.md", b"x")][..],
            &[("a/SKILL.md", SKILL), ("b/", b"")][..],
            &[("a/b/SKILL.md", SKILL)][..],
            &[][..],
        ] {
            let err = unpack(&archive(entries), &limits(), &Cancel::default()).unwrap_err();
            assert!(
                matches!(err, UploadError::MissingSkillMd),
                "{entries:?}: {err}"
            );
        }
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
            let err = unpack(&zip, &limits(), &Cancel::default()).unwrap_err();
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
        let err = unpack(&bytes, &limits(), &Cancel::default()).unwrap_err();
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
        let err = unpack(&bytes, &limits(), &Cancel::default()).unwrap_err();
        assert!(
            matches!(&err, UploadError::NotARegularFile { path } if path == "passwd"),
            "{err}"
        );

        // FIFO, character device, block device, socket; and a file entry that says "folder".
        for mode in [0o010_644, 0o020_644, 0o060_644, 0o140_644, 0o040_755] {
            let mut bytes = archive(&[("SKILL.md", SKILL), ("special", b"")]);
            set_unix_mode(&mut bytes, "special", mode);
            let err = unpack(&bytes, &limits(), &Cancel::default()).unwrap_err();
            assert!(
                matches!(err, UploadError::NotARegularFile { .. }),
                "{mode:o}: {err}"
            );
        }
        // A folder entry that says "regular file".
        let mut bytes = archive(&[("SKILL.md", SKILL), ("dir/", b"")]);
        set_unix_mode(&mut bytes, "dir/", 0o100_644);
        let err = unpack(&bytes, &limits(), &Cancel::default()).unwrap_err();
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
        let err = unpack(&bytes, &limits(), &Cancel::default()).unwrap_err();
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
        let err = unpack(&zip, &small, &Cancel::default()).unwrap_err();
        assert!(
            matches!(err, UploadError::SkillTooLarge { limit: 150 }),
            "{err}"
        );

        // Folder entries do not count as files.
        let zip = archive(&[("d/", b""), ("SKILL.md", SKILL), ("a", b""), ("d/b", b"")]);
        assert_eq!(
            unpack(
                &zip,
                &Limits {
                    max_file_bytes: 1000,
                    ..small
                },
                &Cancel::default(),
            )
            .unwrap()
            .len(),
            3
        );
        let zip = archive(&[("SKILL.md", SKILL), ("a", b""), ("b", b""), ("c", b"")]);
        let err = unpack(
            &zip,
            &Limits {
                max_file_bytes: 1000,
                ..small
            },
            &Cancel::default(),
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
        let err = unpack(&archive_with_duplicate(), &limits(), &Cancel::default()).unwrap_err();
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
            let err = unpack(&bytes, &limits(), &Cancel::default()).unwrap_err();
            assert!(matches!(err, UploadError::Zip(_)), "{err}");
            assert_eq!(err.code(), "invalid-zip");
        }
        // Flipped bits inside the compressed data: the checksum (or the inflater) catches it.
        let mut bytes = archive(&[("SKILL.md", SKILL), ("data.txt", &[b'x'; 5000])]);
        let data = bytes.windows(8).position(|w| w == b"data.txt").unwrap() + 8;
        for b in &mut bytes[data..data + 8] {
            *b ^= 0xff;
        }
        let err = unpack(&bytes, &limits(), &Cancel::default()).unwrap_err();
        assert!(matches!(err, UploadError::Zip(_)), "{err}");
    }
}
