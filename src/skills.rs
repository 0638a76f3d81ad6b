//! Skill folders: the `SKILL.md` manifest, the files on disk and zip uploads.
//!
//! Everything here is synchronous file-system and parsing work; async callers run it on the
//! blocking pool. Nothing here knows about users, the database or HTTP: callers pass the folder to
//! work on (`<data_dir>/skills/<user_id>/<skill_name>`) and a staging folder on the same file
//! system (so that the final step is a rename).

pub mod diff;
pub mod files;
pub mod git;
pub mod manifest;
pub mod search;
pub mod zip_upload;

pub use files::{FileEntry, Limits, ReadError, Staged, UploadError};

pub use manifest::{Manifest, ManifestError};
use serde::Serialize;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the request that asked for some work still waits for it. Its caller holds a
/// [`CancelOnDrop`]: when the caller goes away (its client disconnected, or the request timed
/// out, and its future was dropped), the flag is set, and long work (unpacking a zip, writing a
/// staging folder) stops at its next step instead of finishing for nobody.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(UploadError::Cancelled)` once the caller has gone.
    pub fn check(&self) -> Result<(), UploadError> {
        if self.is_cancelled() {
            Err(UploadError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// A guard that sets the flag when it is dropped, unless [`CancelOnDrop::disarm`]ed first.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Some(self.clone()))
    }
}

/// Cancels its [`Cancel`] when dropped before it is disarmed.
#[derive(Debug)]
pub struct CancelOnDrop(Option<Cancel>);

impl CancelOnDrop {
    /// The caller got its answer: nothing to cancel.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.0.store(true, Ordering::Relaxed);
        }
    }
}

/// Something about a skill that works here but may not elsewhere: returned with the answer that
/// made or read it, never a reason to refuse it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Stable, kebab-case.
    pub code: &'static str,
    /// What it is about: a front matter field, or `files`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}
