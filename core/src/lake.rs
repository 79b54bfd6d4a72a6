//! Opening the lake: a URL to an object store, a prefix inside it, and the URL DataFusion uses.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use url::Url;

use crate::{Error, Result, Table};

/// S3 settings that may come from flags; anything unset falls back to the standard `AWS_*`
/// environment variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`).
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:8333`.
    pub endpoint: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
}

/// An opened lake.
///
/// ```
/// use flowsense_core::Lake;
/// let dir = tempfile::tempdir().unwrap();
/// let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
/// assert!(lake.url().as_str().starts_with("file:///"));
/// assert!(lake.table_url(flowsense_core::Table::Trades).ends_with("/trades/"));
/// ```
#[derive(Clone, Debug)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    /// The same store when it is the local filesystem, for plain-file reads.
    local: Option<Arc<LocalFileSystem>>,
    /// Prefix of the lake inside the store.
    root: Path,
    /// `file:///abs/lake/` or `s3://bucket/prefix/`.
    url: Url,
    /// The store's own base URL (`file:///` or `s3://bucket/`), for registering it with DataFusion.
    store_url: Url,
}

impl Lake {
    /// Opens a lake: `s3://bucket[/prefix]`, `file:///abs/path`, or a local path (created if
    /// missing).
    pub fn open(location: &str, s3: &S3Options) -> Result<Lake> {
        let bad = |why: &str| Error::InvalidLakeUrl {
            url: location.to_string(),
            why: why.to_string(),
        };
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket"));
            }
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            let endpoint = s3
                .endpoint
                .clone()
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
            if let Some(ep) = endpoint {
                b = b
                    .with_allow_http(ep.starts_with("http://"))
                    .with_endpoint(ep);
            }
            if let Some(k) = &s3.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(k) = &s3.secret_access_key {
                b = b.with_secret_access_key(k);
            }
            let region = s3
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .unwrap_or_else(|| "us-east-1".into());
            b = b.with_region(region);
            let store = b.build()?;
            let prefix = prefix.trim_matches('/');
            let url = Url::parse(&format!(
                "s3://{bucket}/{}",
                if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                }
            ))
            .map_err(|e| bad(&e.to_string()))?;
            let store_url =
                Url::parse(&format!("s3://{bucket}/")).map_err(|e| bad(&e.to_string()))?;
            return Ok(Lake {
                store: Arc::new(store),
                local: None,
                root: Path::from(prefix),
                url,
                store_url,
            });
        }
        if location.contains("://") && !location.starts_with("file://") {
            return Err(bad("only file:// and s3:// lakes are supported"));
        }
        let path = match location.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(location),
        };
        std::fs::create_dir_all(&path)?;
        let abs = std::fs::canonicalize(&path)?;
        Self::local(&abs)
    }

    fn local(abs: &FsPath) -> Result<Lake> {
        let bad = |why: String| Error::InvalidLakeUrl {
            url: abs.display().to_string(),
            why,
        };
        let url = Url::from_directory_path(abs).map_err(|_| bad("not an absolute path".into()))?;
        let root = Path::from_filesystem_path(abs).map_err(|e| bad(e.to_string()))?;
        let store_url = Url::parse("file:///").expect("static URL");
        let fs = Arc::new(LocalFileSystem::new());
        Ok(Lake {
            store: fs.clone(),
            local: Some(fs),
            root,
            url,
            store_url,
        })
    }

    /// A lake in memory (`memory:///`), for benchmarks that measure encoding without disk I/O.
    pub fn memory() -> Lake {
        Lake {
            store: Arc::new(object_store::memory::InMemory::new()),
            local: None,
            root: Path::from("lake"),
            url: Url::parse("memory:///lake/").expect("static URL"),
            store_url: Url::parse("memory:///").expect("static URL"),
        }
    }

    /// The object store.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Where an object lives on the local filesystem, for a local lake (`None` on S3 and in
    /// memory). Readers that fetch many small files read them directly, skipping the object
    /// store's hop through its blocking thread pool.
    pub fn local_file(&self, location: &Path) -> Option<PathBuf> {
        self.local
            .as_ref()
            .and_then(|fs| fs.path_to_filesystem(location).ok())
    }

    /// The store's base URL, as DataFusion's object store registry keys it.
    pub fn store_url(&self) -> &Url {
        &self.store_url
    }

    /// The lake's URL, ending in `/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL of a table's folder, ending in `/`.
    pub fn table_url(&self, table: Table) -> String {
        format!("{}{}/", self.url, table.name())
    }

    /// Path of a table's folder inside the store.
    pub fn table_path(&self, table: Table) -> Path {
        self.root.clone().join(table.name())
    }

    /// Path of an object inside the store, from parts below the lake root.
    pub fn path(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.root.clone(), |p, part| p.join(*part))
    }

    /// Every object under a table's folder; a table that does not exist yet has none.
    pub async fn list_table(&self, table: Table) -> Result<Vec<object_store::ObjectMeta>> {
        use futures::TryStreamExt;
        match self
            .store
            .list(Some(&self.table_path(table)))
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(l) => Ok(l),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Where a table's files are, for readers that need only that: on a `file://` lake read
    /// straight from the directories (no `stat` per file and no hop through the object store's
    /// blocking pool: a 1000-day bar lake listed in a fraction of the time); on other stores
    /// the store's listing. Temporary files of writes in flight are left out, as the store's
    /// listing leaves them out.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use flowsense_core::{Lake, Table};
    /// let dir = tempfile::tempdir().unwrap();
    /// let part = dir.path().join("trades/date=2024-08-08/symbol=ABC");
    /// std::fs::create_dir_all(&part).unwrap();
    /// std::fs::write(part.join("x-00000.parquet"), b"").unwrap();
    /// let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    /// let paths = lake.list_table_paths(Table::Trades).await.unwrap();
    /// assert_eq!(paths[0].as_ref().rsplit('/').next(), Some("x-00000.parquet"));
    /// # });
    /// ```
    pub async fn list_table_paths(&self, table: Table) -> Result<Vec<Path>> {
        let base = self.table_path(table);
        if let Some(dir) = self.local_file(&base) {
            let mut out = Vec::new();
            let mut stack = vec![(dir, base.clone())];
            while let Some((dir, at)) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name();
                    // Names the store could not have written (not UTF-8, or a write's
                    // `#`-suffixed temporary file) are not the lake's.
                    let Some(name) = name.to_str().filter(|n| !n.contains('#')) else {
                        continue;
                    };
                    let child = at.clone().join(name);
                    if entry.file_type()?.is_dir() {
                        stack.push((entry.path(), child));
                    } else {
                        out.push(child);
                    }
                }
            }
            return Ok(out);
        }
        Ok(self
            .list_table(table)
            .await?
            .into_iter()
            .map(|m| m.location)
            .collect())
    }

    /// True for `file://` lakes.
    pub fn is_local(&self) -> bool {
        self.url.scheme() == "file"
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    #[test]
    fn local_paths_equal_the_store_listing() {
        futures::executor::block_on(local_paths_equal_the_store_listing_async());
    }

    async fn local_paths_equal_the_store_listing_async() {
        let dir = tempfile::tempdir().unwrap();
        for (part, file) in [
            (
                "trades/date=2024-08-08/symbol=BTCUSDT-PERP",
                "btcusdt_20240808-00000.parquet",
            ),
            (
                "trades/date=2024-08-08/symbol=BTCUSDT-PERP",
                "btcusdt_20240808-00001.parquet",
            ),
            (
                "trades/date=2024-08-09/symbol=btcusd_perp",
                "a b-00000.parquet",
            ),
            ("trades/date=2024-08-09/symbol=ETHUSDT", "x.parquet#3"),
        ] {
            let d = dir.path().join(part);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(file), b"x").unwrap();
        }
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let mut fast = lake.list_table_paths(Table::Trades).await.unwrap();
        let mut store: Vec<Path> = lake
            .list_table(Table::Trades)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.location)
            .collect();
        fast.sort();
        store.sort();
        assert_eq!(fast.len(), 3);
        assert_eq!(fast, store);
        assert!(lake.list_table_paths(Table::Bars).await.unwrap().is_empty());
    }
}
