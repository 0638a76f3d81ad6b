//! Where the MCP server finds a user's skills: the accounts' workspaces, or one plain folder
//! (`agentskills-mcp stdio --skills-dir DIR`, the original single-user server's way, no database).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::actors::workspace::{IndexedSkill, SKILL_MD, SkillIndex, skill_warnings};
use crate::actors::workspaces::Workspaces;
use crate::domain::{SkillName, SkillPath};
use crate::error::AppError;
use crate::skills::files;
use crate::skills::manifest;
use crate::store::{self, SkillRecord};

/// How long a folder's index is reused before the folder is read again: the folder is edited by
/// hand, so changes should show up, but not cost a scan per request.
pub const FOLDER_RESCAN: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub enum SkillSource {
    /// Each user's skills from their workspace actor.
    Accounts(Workspaces),
    /// Every skill in one folder, for whoever connects.
    Folder(Arc<FolderSource>),
}

impl SkillSource {
    pub async fn index(&self, user_id: Uuid) -> Result<Arc<SkillIndex>, AppError> {
        match self {
            SkillSource::Accounts(workspaces) => workspaces.index(user_id).await,
            SkillSource::Folder(folder) => Box::pin(folder.index()).await,
        }
    }

    /// A digest of `user_id`'s skills as they can be seen from outside the process that changes
    /// them: equal stamps, no change in between. For a folder, its index (read again once it is
    /// [`FOLDER_RESCAN`] old: names, descriptions, every file's path and digest); for the
    /// accounts, the user's rows and the modification times of their folders
    /// ([`Workspaces::stamp`]). A stdio server compares stamps to tell its listen streams of
    /// changes made by hand or by the HTTP server beside it.
    pub async fn stamp(&self, user_id: Uuid) -> Result<Stamp, AppError> {
        match self {
            SkillSource::Accounts(workspaces) => Ok(Stamp(workspaces.stamp(user_id).await?)),
            SkillSource::Folder(folder) => {
                let index = Box::pin(folder.index()).await?;
                let mut digest = blake3::Hasher::new();
                for skill in index.skills() {
                    let texts = [&skill.record.name, &skill.record.description];
                    let files = skill.files.iter().flat_map(|f| [&f.path, &f.sha256]);
                    for text in texts.into_iter().chain(files) {
                        digest.update(&(text.len() as u64).to_le_bytes());
                        digest.update(text.as_bytes());
                    }
                }
                Ok(Stamp(*digest.finalize().as_bytes()))
            }
        }
    }

    /// Makes the next read see the skills as they are now. The accounts' index is loaded once
    /// and kept: a process that only reads beside the server (`stdio --token`) forgets it when a
    /// stamp says the server changed it. A folder is read again by itself.
    pub async fn reload(&self, user_id: Uuid) {
        if let SkillSource::Accounts(workspaces) = self {
            workspaces.reload(user_id).await;
        }
    }

    pub fn skill_dir(&self, skill: &SkillRecord) -> PathBuf {
        match self {
            SkillSource::Accounts(workspaces) => workspaces.skill_dir(skill),
            SkillSource::Folder(folder) => folder.root.join(&skill.name),
        }
    }

    /// The skill's folder, to read from: an account's copy is made again first if it is
    /// missing ([`Workspaces::ready_dir`]).
    pub fn ready_dir(&self, skill: &SkillRecord) -> crate::actors::workspaces::ReadyDir<'_> {
        match self {
            SkillSource::Accounts(workspaces) => workspaces.ready_dir(skill),
            SkillSource::Folder(folder) => futures_util::future::Either::Left(std::future::ready(
                folder.root.join(&skill.name),
            )),
        }
    }
}

/// What [`SkillSource::stamp`] gives: a digest to compare with a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp([u8; 32]);

/// A plain folder of skills: `<root>/<skill_name>/SKILL.md`.
#[derive(Debug)]
pub struct FolderSource {
    root: PathBuf,
    max_read: u64,
    cached: Mutex<Option<(Instant, Arc<SkillIndex>)>>,
}

impl FolderSource {
    pub fn new(root: PathBuf, max_read: u64) -> FolderSource {
        FolderSource {
            root,
            max_read,
            cached: Mutex::new(None),
        }
    }

    async fn index(&self) -> Result<Arc<SkillIndex>, AppError> {
        if let Some((at, index)) = self
            .cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            && at.elapsed() < FOLDER_RESCAN
        {
            return Ok(Arc::clone(index));
        }
        let root = self.root.clone();
        let max_read = self.max_read;
        let index = tokio::task::spawn_blocking(move || read_folder(&root, max_read))
            .await
            .map_err(AppError::internal)?
            .map_err(AppError::internal)?;
        let index = Arc::new(index);
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), Arc::clone(&index)));
        Ok(index)
    }
}

/// Every sub-folder of `root` named like a skill, with a `SKILL.md` that follows the rules, is a
/// skill; anything else is left out (and said so in the log).
fn read_folder(root: &Path, max_read: u64) -> std::io::Result<SkillIndex> {
    let mut skills = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_dir() || SkillName::parse(&name).is_err() {
            continue;
        }
        let dir = entry.path();
        let Ok(skill_md_path) = SkillPath::parse(SKILL_MD) else {
            continue;
        };
        let text = match files::read_beneath(&dir, &skill_md_path, max_read) {
            Ok(bytes) => String::from_utf8(bytes).ok(),
            Err(_) => None,
        };
        let Some(text) = text else {
            tracing::warn!(skill = %name, "left out: no readable UTF-8 SKILL.md");
            continue;
        };
        let manifest = match manifest::parse(&text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(skill = %name, error = %e, "left out: SKILL.md is not usable");
                continue;
            }
        };
        if manifest.name != name {
            tracing::warn!(skill = %name, front_matter_name = %manifest.name, "SKILL.md's name differs from the folder's; served by the folder's name");
        }
        let entries = files::scan(&dir)?;
        let warnings = skill_warnings(&name, Some(&manifest), files::name_warnings(&entries));
        let now = store::now();
        skills.push(IndexedSkill {
            record: SkillRecord {
                id: Uuid::new_v4(),
                user_id: Uuid::nil(),
                name: name.clone(),
                description: manifest.description.clone(),
                skill_dir: name,
                is_active: true,
                created_at: now,
                updated_at: now,
                // A plain folder has no versions: it is what it is on disk.
                version: 0,
            },
            bytes: entries.iter().map(|f| f.size).sum(),
            warnings,
            digest: crate::actors::workspace::files_digest(&entries),
            files: entries,
            skill_md: Some(Arc::from(text)),
            manifest: Some(manifest),
            load_skill_result: std::sync::OnceLock::new(),
            search_line_json: std::sync::OnceLock::new(),
        });
    }
    Ok(SkillIndex::from_skills_searched(skills))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_folder_of_skills_is_indexed_and_rescanned() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("pdf/SKILL.md", "---\nname: pdf\ndescription: PDFs.\n---\n");
        write("pdf/docs/a.md", "a");
        write("wrong/SKILL.md", "---\nname: other\ndescription: x\n---\n");
        write("broken/SKILL.md", "no front matter");
        write("Not_A_Name/SKILL.md", "---\nname: x\ndescription: x\n---\n");
        write("loose.md", "a file at the top");
        let source = FolderSource::new(dir.path().to_owned(), 1 << 20);
        let index = source.index().await.unwrap();
        let names: Vec<&str> = index.skills().map(|s| s.record.name.as_str()).collect();
        // A front matter name that is not the folder's is served by the folder's, with a warning.
        assert_eq!(names, ["pdf", "wrong"]);
        let wrong = index.by_name("wrong").unwrap();
        assert_eq!(wrong.warnings[0].code, "name-mismatch");
        let pdf = index.by_name("pdf").unwrap();
        assert_eq!(
            pdf.files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["SKILL.md", "docs/a.md"]
        );
        assert_eq!(pdf.record.description, "PDFs.");
    }
}
