//! The blob store for envelopes too large to keep in a database row, through `object_store`.

use std::sync::Arc;

use object_store::{local::LocalFileSystem, path::Path, ObjectStore, ObjectStoreExt, PutPayload};

use crate::Result;

/// Envelopes at least this large go to the blob store instead of the database row.
pub const BLOB_THRESHOLD: usize = 256 * 1024;

/// Large envelopes by name. Objects are written before the database row that names them is
/// committed, so a committed row never points at a missing object.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
}

impl BlobStore {
    /// A blob store in a local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<BlobStore> {
        std::fs::create_dir_all(dir)?;
        // fsync files and directories: an acknowledged write must survive a crash.
        let fs = LocalFileSystem::new_with_prefix(dir)?.with_fsync(true);
        Ok(BlobStore {
            inner: Arc::new(fs),
        })
    }

    /// Any `object_store` backend (S3-compatible storage at scale).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>) -> BlobStore {
        BlobStore { inner }
    }

    /// Whether an envelope of this size belongs in the blob store.
    pub fn wants(len: usize) -> bool {
        len >= BLOB_THRESHOLD
    }

    /// Store an object durably under `name`.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.inner
            .put(&Path::from(name), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    /// Fetch an object.
    pub async fn get(&self, name: &str) -> Result<Vec<u8>> {
        let got = self.inner.get(&Path::from(name)).await?;
        Ok(got.bytes().await?.to_vec())
    }
}
