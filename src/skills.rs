//! Skill folders: the `SKILL.md` manifest, the files on disk and zip uploads.
//!
//! Everything here is synchronous file-system and parsing work; async callers run it on the
//! blocking pool. Nothing here knows about users, the database or HTTP: callers pass the folder to
//! work on (`<data_dir>/skills/<user_id>/<skill_name>`) and a staging folder on the same file
//! system (so that the final step is a rename).

pub mod files;
pub mod manifest;
pub mod zip_upload;

pub use files::{FileEntry, Limits, ReadError, Staged, UploadError};
pub use manifest::{Manifest, ManifestError};
