//! Skill content as immutable versions.
//!
//! A version is a manifest: every file's path, sha256, size and executable bit, recorded in the
//! database ([`crate::store::NewVersion`]). The files themselves are blobs, stored once per user
//! by their sha256 in a [`BlobStore`], whatever skill or version holds them. A skill's current
//! version is a number on its row, switched in the same transaction that records the version, and
//! materialized as the skill's folder under `<data_dir>/skills/<user>/<name>/`, which is what
//! MCP, the sandbox and the REST API read: the folder is a copy of the current version, never the
//! truth.
//!
//! The order that makes a crash harmless: blobs are stored before any version refers to them,
//! the version (and the current pointer) is recorded, then the folder is swapped in. A crash after
//! the blobs leaves only unreferenced blobs, which collection removes; a crash after the record
//! leaves a folder behind its version, which the next load materializes again from the blobs.

pub mod blobs;

pub use blobs::{BlobError, BlobStore};

use sha2::{Digest as _, Sha256};

use crate::store::VersionFile;

/// The digest of a version's manifest: sha256 over each file's path, sha256, size and executable
/// bit, in path order, so that two versions with the same files have the same digest whatever
/// order they were listed in.
pub fn manifest_digest(files: &[VersionFile]) -> String {
    let mut sorted: Vec<&VersionFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hasher = Sha256::new();
    for file in sorted {
        hasher.update(file.path.as_bytes());
        hasher.update([0]);
        hasher.update(file.sha256.as_bytes());
        hasher.update([0]);
        hasher.update(file.size.to_string().as_bytes());
        hasher.update([0, u8::from(file.executable), b'\n']);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, sha: char, executable: bool) -> VersionFile {
        VersionFile {
            path: path.to_owned(),
            sha256: sha.to_string().repeat(64),
            size: 3,
            executable,
        }
    }

    #[test]
    fn the_digest_depends_on_the_files_not_their_order() {
        let a = [file("SKILL.md", 'a', false), file("run.sh", 'b', true)];
        let b = [file("run.sh", 'b', true), file("SKILL.md", 'a', false)];
        assert_eq!(manifest_digest(&a), manifest_digest(&b));
        assert_eq!(manifest_digest(&a).len(), 64);
        let not_executable = [file("SKILL.md", 'a', false), file("run.sh", 'b', false)];
        assert_ne!(manifest_digest(&a), manifest_digest(&not_executable));
        let renamed = [file("SKILL.md", 'a', false), file("go.sh", 'b', true)];
        assert_ne!(manifest_digest(&a), manifest_digest(&renamed));
    }
}
