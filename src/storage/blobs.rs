//! The blob store: each user's files, stored once by their sha256.
//!
//! It is `object_store`'s interface over whatever holds the bytes: the local file system by
//! default (under `<data_dir>/blobs`), so that another store (S3) is a configuration switch, not
//! new code. A blob is written with create-only semantics and never changed: its name is its
//! content's digest. A blob is always a copy, never a hard link to a skill's folder: someone
//! editing a materialized file in place (an operator, as root) must not change every version that
//! holds those bytes. Local blobs are read-only besides.
//!
//! Keys are `<user id>/<first two hex digits>/<sha256>`; a digest is checked to be 64 lower-case
//! hex digits before it is made into a key, so no key can leave its user's prefix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use uuid::Uuid;

/// Why a blob could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("{0:?} is not a sha256 digest")]
    InvalidDigest(String),
    #[error("blob {0} is missing")]
    Missing(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("blob store: {0}")]
    Store(#[from] object_store::Error),
}

/// The handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// The local store, when the blobs are files on this machine: then a version is made from
    /// staged files by hard links, and materialized by copying files.
    local: Option<Arc<LocalFileSystem>>,
    /// How old a stored object with no row must be before a sweep removes it
    /// (`storage.sweep_grace_secs`): younger ones may be another replica's change in progress.
    sweep_grace: std::time::Duration,
}

impl BlobStore {
    /// The store `settings` name: local files under `<data_dir>/blobs`, or an S3 bucket.
    pub fn from_settings(settings: &crate::config::Settings) -> Result<BlobStore, BlobError> {
        let store = match settings.storage.backend {
            crate::config::StorageBackend::Local => {
                let root = settings
                    .storage
                    .path
                    .clone()
                    .unwrap_or_else(|| settings.server.data_dir.join("blobs"));
                BlobStore::local(&root)
            }
            crate::config::StorageBackend::S3 => BlobStore::s3(&settings.storage.s3),
        }?;
        Ok(store.with_sweep_grace(std::time::Duration::from_secs(
            settings.storage.sweep_grace_secs,
        )))
    }

    /// The same store, whose sweeps leave alone what is younger than `grace`.
    pub fn with_sweep_grace(mut self, grace: std::time::Duration) -> BlobStore {
        self.sweep_grace = grace;
        self
    }

    /// Blobs as objects of an S3-compatible bucket. Credentials and the other standard settings
    /// come from the `AWS_*` environment variables; `endpoint` (another S3 API than AWS's) makes
    /// requests path-style. Writes are create-only (`If-None-Match: *`), which AWS S3 and the
    /// common S3 servers honour.
    pub fn s3(settings: &crate::config::S3Settings) -> Result<BlobStore, BlobError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(settings.bucket.clone().unwrap_or_default())
            .with_region(settings.region.clone());
        if let Some(endpoint) = settings.endpoint.as_deref().filter(|e| !e.is_empty()) {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        Ok(BlobStore {
            store: Arc::new(builder.build()?),
            local: None,
            sweep_grace: std::time::Duration::ZERO,
        })
    }

    /// Whether the store answers (a listing of one key's worth), for readiness checks.
    pub async fn ping(&self) -> Result<(), BlobError> {
        let prefix = Key::from("health");
        let mut listing = self.store.list(Some(&prefix));
        match listing.next().await {
            None | Some(Ok(_)) | Some(Err(object_store::Error::NotFound { .. })) => Ok(()),
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// Blobs as files under `root` (created if need be).
    pub fn local(root: &Path) -> Result<BlobStore, BlobError> {
        std::fs::create_dir_all(root)?;
        let store = Arc::new(LocalFileSystem::new_with_prefix(root)?.with_automatic_cleanup(true));
        Ok(BlobStore {
            store: Arc::clone(&store) as Arc<dyn ObjectStore>,
            local: Some(store),
            sweep_grace: std::time::Duration::ZERO,
        })
    }

    fn key(user: Uuid, sha256: &str) -> Result<Key, BlobError> {
        if sha256.len() != 64
            || !sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(BlobError::InvalidDigest(sha256.to_owned()));
        }
        Ok(Key::from(format!("{user}/{}/{sha256}", &sha256[..2])))
    }

    /// The file of a local blob.
    fn local_path(&self, user: Uuid, sha256: &str) -> Result<Option<PathBuf>, BlobError> {
        match &self.local {
            Some(local) => Ok(Some(local.path_to_filesystem(&Self::key(user, sha256)?)?)),
            None => Ok(None),
        }
    }

    /// Stores a copy of `source`'s bytes as blob `sha256` of `user`, unless it is there already.
    pub async fn put_file(&self, user: Uuid, sha256: &str, source: &Path) -> Result<(), BlobError> {
        if let Some(target) = self.local_path(user, sha256)? {
            let source = source.to_owned();
            return tokio::task::spawn_blocking(move || link_blob(&source, &target))
                .await
                .map_err(|e| BlobError::Io(std::io::Error::other(e)))?;
        }
        let bytes = tokio::fs::read(source).await?;
        self.put(user, sha256, Bytes::from(bytes)).await
    }

    /// Stores each `(sha256, source)` of `user` as [`BlobStore::put_file`] does, together: on the
    /// local store the copies are made first and then flushed to disk at once (one journal commit
    /// for all of them, not one per file), before any is published under its name.
    pub async fn put_files(
        &self,
        user: Uuid,
        files: &[(String, PathBuf)],
    ) -> Result<(), BlobError> {
        if self.local.is_none() {
            for (sha256, source) in files {
                self.put_file(user, sha256, source).await?;
            }
            return Ok(());
        }
        let mut targets = Vec::with_capacity(files.len());
        for (sha256, source) in files {
            if let Some(target) = self.local_path(user, sha256)? {
                targets.push((source.clone(), target));
            }
        }
        tokio::task::spawn_blocking(move || link_blobs(&targets))
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
    }

    /// Stores `bytes` as blob `sha256` of `user`, unless it is there already.
    pub async fn put(&self, user: Uuid, sha256: &str, bytes: Bytes) -> Result<(), BlobError> {
        let key = Self::key(user, sha256)?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&key, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The bytes of blob `sha256` of `user`.
    pub async fn get(&self, user: Uuid, sha256: &str) -> Result<Bytes, BlobError> {
        let key = Self::key(user, sha256)?;
        match self.store.get(&key).await {
            Ok(found) => Ok(found.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::Missing(sha256.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes blob `sha256` of `user` to `target` (a new file, in a folder that exists), with
    /// the executable bit if `executable`. A copy, not a link: the same blob may be executable in
    /// one version and not in another.
    pub async fn copy_to(
        &self,
        user: Uuid,
        sha256: &str,
        target: &Path,
        executable: bool,
    ) -> Result<(), BlobError> {
        let target = target.to_owned();
        if let Some(source) = self.local_path(user, sha256)? {
            let missing = sha256.to_owned();
            return tokio::task::spawn_blocking(move || {
                match std::fs::copy(&source, &target) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && !source.exists() => {
                        return Err(BlobError::Missing(missing));
                    }
                    Err(e) => return Err(e.into()),
                }
                set_mode(&target, executable)?;
                Ok(())
            })
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))?;
        }
        let bytes = self.get(user, sha256).await?;
        tokio::task::spawn_blocking(move || {
            std::fs::write(&target, &bytes)?;
            set_mode(&target, executable)?;
            Ok(())
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
    }

    /// Removes blob `sha256` of `user`; one that is not there is not an error.
    pub async fn delete(&self, user: Uuid, sha256: &str) -> Result<(), BlobError> {
        let key = Self::key(user, sha256)?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The digests of every blob stored for `user`.
    pub async fn list(&self, user: Uuid) -> Result<Vec<String>, BlobError> {
        Ok(self
            .scan(user)
            .await?
            .0
            .into_iter()
            .map(|(digest, _)| digest)
            .collect())
    }

    /// The digests of the blobs stored for `user` that are older than the sweep's grace
    /// (`storage.sweep_grace_secs`), after removing what is under `user`'s prefix, is no blob
    /// and is that old too: the partial copies of writes that a crash cut short. One listing for
    /// both. Younger objects are left out either way: another replica may be storing them for a
    /// change it has not recorded yet (this process is not: call it only before the user's
    /// workspace, their one writer here, handles its first change). Returns the digests and how
    /// many leftovers it removed.
    pub async fn list_removing_leftovers(
        &self,
        user: Uuid,
    ) -> Result<(Vec<String>, usize), BlobError> {
        let settled = std::time::SystemTime::now()
            .checked_sub(self.sweep_grace)
            .unwrap_or(std::time::UNIX_EPOCH);
        let old_enough = |modified: std::time::SystemTime| modified <= settled;
        let (digests, leftovers) = self.scan(user).await?;
        let mut removed = 0;
        for (location, modified) in &leftovers {
            if !old_enough(*modified) {
                continue;
            }
            match self.store.delete(location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                Err(e) => return Err(e.into()),
            }
        }
        let digests = digests
            .into_iter()
            .filter(|(_, modified)| old_enough(*modified))
            .map(|(digest, _)| digest)
            .collect();
        Ok((digests, removed))
    }

    /// Everything under `user`'s prefix, with its time of last change: the blobs' digests, and
    /// the keys that are no blob.
    #[allow(clippy::type_complexity)]
    async fn scan(
        &self,
        user: Uuid,
    ) -> Result<
        (
            Vec<(String, std::time::SystemTime)>,
            Vec<(Key, std::time::SystemTime)>,
        ),
        BlobError,
    > {
        let prefix = Key::from(user.to_string());
        let mut listing = self.store.list(Some(&prefix));
        let (mut digests, mut others) = (Vec::new(), Vec::new());
        while let Some(meta) = listing.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                // Removed while the listing ran.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let modified = std::time::SystemTime::from(meta.last_modified);
            match meta.location.filename() {
                Some(name) if Self::key(user, name).is_ok() => {
                    digests.push((name.to_owned(), modified));
                }
                _ => others.push((meta.location, modified)),
            }
        }
        Ok((digests, others))
    }

    /// Removes every blob of `user` (their account is deleted).
    pub async fn remove_user(&self, user: Uuid) -> Result<(), BlobError> {
        for sha256 in self.list(user).await? {
            self.delete(user, &sha256).await?;
        }
        Ok(())
    }
}

/// Copies `source` to the blob file `target`, read-only; a blob already there is kept. The copy
/// is written beside the target and published by a hard link of its own, so that a reader never
/// sees a half-written blob and two writers of one blob cannot clobber each other.
fn link_blob(source: &Path, target: &Path) -> Result<(), BlobError> {
    link_blobs(&[(source.to_owned(), target.to_owned())])
}

/// Publishes each `(source, target)`: a read-only copy of `source` made beside `target` under a
/// partial name, flushed to disk, then linked to `target` (create-only: a blob already there
/// stays). The flushes run side by side, so the file system commits them together; a crash
/// leaves at most partial copies, which [`BlobStore::list_removing_leftovers`] removes.
fn link_blobs(files: &[(PathBuf, PathBuf)]) -> Result<(), BlobError> {
    let mut partials: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
    let copied = (|| {
        for (source, target) in files {
            if target.exists() {
                continue;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let partial = target.with_extension(format!("partial-{}", Uuid::new_v4()));
            std::fs::copy(source, &partial)?;
            partials.push((partial.clone(), target));
            // Nothing writes a blob after it is made; read-only keeps a mistake from changing
            // every version that holds it.
            let mut permissions = std::fs::metadata(&partial)?.permissions();
            permissions.set_readonly(true);
            std::fs::set_permissions(&partial, permissions)?;
        }
        sync_all(partials.iter().map(|(p, _)| p.as_path()))?;
        for (partial, target) in &partials {
            match std::fs::hard_link(partial, target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })();
    for (partial, _) in &partials {
        let _ = std::fs::remove_file(partial);
    }
    copied.map_err(BlobError::from)
}

/// `fdatasync` of every file, up to eight at a time on threads of their own: flushes issued
/// together are committed together, where one after another would wait for a commit each.
fn sync_all<'a>(paths: impl Iterator<Item = &'a Path>) -> std::io::Result<()> {
    let paths: Vec<&Path> = paths.collect();
    if paths.len() <= 1 {
        for path in paths {
            std::fs::File::open(path)?.sync_data()?;
        }
        return Ok(());
    }
    let lanes = paths.len().min(8);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                let mine: Vec<&Path> = paths.iter().skip(lane).step_by(lanes).copied().collect();
                scope.spawn(move || -> std::io::Result<()> {
                    for path in mine {
                        std::fs::File::open(path)?.sync_data()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| std::io::Error::other("a flush thread panicked"))??;
        }
        Ok(())
    })
}

/// `0755` for an executable file, `0644` for any other.
fn set_mode(path: &Path, executable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    #[tokio::test]
    async fn blobs_are_stored_once_read_back_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::local(&dir.path().join("blobs")).unwrap();
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let staged = dir.path().join("staged");
        std::fs::write(&staged, b"hello").unwrap();
        let digest = sha(b"hello");
        blobs.put_file(ann, &digest, &staged).await.unwrap();
        // Again, and from bytes: still one blob, unchanged.
        blobs.put_file(ann, &digest, &staged).await.unwrap();
        blobs
            .put(ann, &digest, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(blobs.get(ann, &digest).await.unwrap(), "hello");
        assert_eq!(blobs.list(ann).await.unwrap(), vec![digest.clone()]);
        assert!(blobs.list(bob).await.unwrap().is_empty());
        assert!(matches!(
            blobs.get(bob, &digest).await,
            Err(BlobError::Missing(_))
        ));

        // A partial copy that a crash left beside it goes; the blob stays.
        let folder = dir
            .path()
            .join("blobs")
            .join(ann.to_string())
            .join(&digest[..2]);
        std::fs::write(folder.join(format!("{digest}.partial-1")), b"hel").unwrap();
        assert_eq!(
            blobs.list_removing_leftovers(ann).await.unwrap(),
            (vec![digest.clone()], 1)
        );
        assert_eq!(
            blobs.list_removing_leftovers(ann).await.unwrap(),
            (vec![digest.clone()], 0)
        );
        assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 1);

        // Materialized as a copy with the mode asked for.
        let out = dir.path().join("out.sh");
        blobs.copy_to(ann, &digest, &out, true).await.unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"hello");

        blobs.delete(ann, &digest).await.unwrap();
        blobs.delete(ann, &digest).await.unwrap();
        assert!(blobs.list(ann).await.unwrap().is_empty());
        assert!(matches!(
            blobs
                .copy_to(ann, &digest, &dir.path().join("gone"), false)
                .await,
            Err(BlobError::Missing(_))
        ));
    }

    #[tokio::test]
    async fn a_digest_never_leaves_its_users_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::local(dir.path()).unwrap();
        let user = Uuid::new_v4();
        for bad in [
            "../../etc/passwd",
            "",
            &"A".repeat(64),
            &"a".repeat(63),
            &format!("{}/x", "a".repeat(62)),
        ] {
            assert!(
                matches!(
                    blobs.put(user, bad, Bytes::new()).await,
                    Err(BlobError::InvalidDigest(_))
                ),
                "{bad}"
            );
        }
    }
}
