//! Where a lake lives: a local folder, or a prefix in an object store (S3 and S3-compatible
//! stores, Azure Blob Storage and ADLS Gen2), reached through the `object_store` crate.
//!
//! Credentials come from each cloud's standard environment variables, read by `object_store`'s
//! builders (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT` for MinIO or Ceph, `AWS_ALLOW_HTTP`; `AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_KEY`, `AZURE_STORAGE_USE_EMULATOR` for
//! Azurite, and the rest of `object_store`'s keys), and, with none of those, from the instance's
//! own identity (EC2 instance profiles, ECS task roles, web identity tokens; Azure managed
//! identity). A location is shown to people without its query string or user information, so
//! a credential pasted into a URL does not reach a log or an error.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use url::Url;

/// Errors of a location.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The location cannot be used.
    #[error("{location}: {reason}")]
    Location {
        /// The location, shown without credentials.
        location: String,
        /// What is wrong.
        reason: String,
    },
}

/// A lake's location.
#[derive(Debug, Clone)]
pub enum Location {
    /// A folder on this machine.
    Local(PathBuf),
    /// A prefix in an object store (or a local folder reached as one, `file://`).
    Object(ObjectLocation),
}

/// A prefix in an object store, and the store.
#[derive(Clone)]
pub struct ObjectLocation {
    /// The prefix as a URL, without a trailing `/` (`s3://bucket/lake`).
    pub url: Url,
    /// The store at its root (the bucket, the container, or `/`): Delta Lake resolves tables
    /// under it by their URL's path.
    pub store: Arc<dyn ObjectStore>,
    /// The same store's multipart API, where it has one (S3, Azure): uploads whose ids are
    /// recorded, so that a killed run's parts can be aborted by the next.
    pub multipart: Option<Arc<dyn MultipartStore>>,
}

impl std::fmt::Debug for ObjectLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectLocation")
            .field("url", &shown(&self.url))
            .finish()
    }
}

/// The URL schemes of object stores mailflow writes.
pub const SCHEMES: &[&str] = &["s3", "s3a", "az", "azure", "abfs", "abfss", "file"];

/// Whether `text` names an object store (`scheme://…`) rather than a local folder. A Windows
/// drive (`C:\logs`, `C:/logs`) is a folder.
pub fn is_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        scheme.len() > 1
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
    })
}

/// `url` as it may be shown: no user information, no query, no fragment.
pub fn shown(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string().trim_end_matches('/').to_string()
}

/// [`shown`] of text that may not parse as a URL: everything after `?` is cut.
pub fn shown_text(text: &str) -> String {
    match Url::parse(text) {
        Ok(u) => shown(&u),
        Err(_) => text
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

impl Location {
    /// A local folder, or an object store for `scheme://…` (see [`SCHEMES`]).
    pub fn parse(text: &str) -> Result<Location, Error> {
        if !is_url(text) {
            return Ok(Location::Local(PathBuf::from(text)));
        }
        let bad = |reason: String| Error::Location {
            location: shown_text(text),
            reason,
        };
        let mut url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
        if url.query().is_some() || url.password().is_some() {
            return Err(bad(
                "credentials do not belong in the location: give them in the environment (AWS_*, AZURE_STORAGE_*)"
                    .into(),
            ));
        }
        let path = url.path().trim_end_matches('/').to_string();
        url.set_path(&path);
        let (store, multipart): (Arc<dyn ObjectStore>, Option<Arc<dyn MultipartStore>>) =
            match url.scheme() {
                "s3" | "s3a" => {
                    if url.host_str().is_none_or(str::is_empty) {
                        return Err(bad("no bucket: write s3://BUCKET/PREFIX".into()));
                    }
                    let s3 = Arc::new(
                        AmazonS3Builder::from_env()
                            .with_url(url.as_str())
                            .build()
                            .map_err(|e| bad(store_error(&e)))?,
                    );
                    (s3.clone(), Some(s3))
                }
                "az" | "azure" | "abfs" | "abfss" => {
                    if url.host_str().is_none_or(str::is_empty) {
                        return Err(bad("no container: write az://CONTAINER/PREFIX".into()));
                    }
                    let azure = Arc::new(
                        MicrosoftAzureBuilder::from_env()
                            .with_url(url.as_str())
                            .build()
                            .map_err(|e| bad(store_error(&e)))?,
                    );
                    (azure.clone(), Some(azure))
                }
                "file" => {
                    let folder = url
                        .to_file_path()
                        .map_err(|()| bad("not a local path".into()))?;
                    std::fs::create_dir_all(&folder).map_err(|e| bad(e.to_string()))?;
                    (Arc::new(LocalFileSystem::new()), None)
                }
                other => {
                    return Err(bad(format!(
                        "unknown scheme {other}://; mailflow writes to {}",
                        SCHEMES
                            .iter()
                            .map(|s| format!("{s}://"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            };
        Ok(Location::Object(ObjectLocation {
            url,
            store,
            multipart,
        }))
    }

    /// A local folder as an object store location (`file://`), for Delta tables on a local
    /// disk or a share.
    pub fn local_as_object(folder: &std::path::Path) -> Result<Location, Error> {
        let bad = |reason: String| Error::Location {
            location: folder.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(folder).map_err(|e| bad(e.to_string()))?;
        let absolute = std::path::absolute(folder).map_err(|e| bad(e.to_string()))?;
        let url = Url::from_directory_path(&absolute)
            .map_err(|()| bad("cannot be written as a file:// URL".into()))?;
        Location::parse(url.as_str())
    }

    /// The location for people (no credentials).
    pub fn shown(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Object(o) => shown(&o.url),
        }
    }
}

impl ObjectLocation {
    /// The URL of `relative` under this location.
    pub fn join(&self, relative: &str) -> Url {
        let mut u = self.url.clone();
        let path = format!("{}/{}", u.path().trim_end_matches('/'), relative);
        u.set_path(&path);
        u
    }

    /// The store path of `relative` under this location.
    pub fn path(&self, relative: &str) -> object_store::path::Path {
        let joined = self.join(relative);
        match self.url.scheme() {
            // The local store is rooted at `/`: the path is the file's absolute path.
            "file" => joined
                .to_file_path()
                .ok()
                .and_then(|p| object_store::path::Path::from_absolute_path(p).ok())
                .unwrap_or_else(|| object_store::path::Path::from(joined.path())),
            // Buckets and containers: the URL's path, percent-decoded, is the key.
            _ => object_store::path::Path::from_url_path(joined.path())
                .unwrap_or_else(|_| object_store::path::Path::from(joined.path())),
        }
    }
}

/// An object store error without what it may quote of a request (headers, signed URLs).
pub(crate) fn store_error(e: &object_store::Error) -> String {
    let text = e.to_string();
    // Errors quote URLs; a signed one carries its signature in the query.
    text.split_whitespace()
        .map(|w| {
            if w.contains("://") && w.contains('?') {
                shown_text(w.trim_matches(|c: char| c == '"' || c == '\'' || c == ','))
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_urls() {
        assert!(!is_url("/var/lake"));
        assert!(!is_url(r"C:\lake"));
        assert!(!is_url("C:/lake"));
        assert!(is_url("s3://bucket/lake"));
        assert!(is_url("abfss://c@acct.dfs.core.windows.net/lake"));
        assert!(matches!(
            Location::parse("lake").unwrap(),
            Location::Local(_)
        ));
    }

    #[test]
    fn credentials_are_never_shown() {
        let u = Url::parse("s3://key:secret@bucket/lake?sig=abc").unwrap();
        assert_eq!(shown(&u), "s3://bucket/lake");
        let e = Location::parse("az://container/lake?sv=2024&sig=SECRET")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SECRET"), "{e}");
        assert!(e.contains("environment"), "{e}");
        assert_eq!(shown_text("s3://b/x?token=1"), "s3://b/x");
    }

    #[test]
    fn unknown_schemes_and_missing_buckets_are_named() {
        let e = Location::parse("gs://bucket/lake").unwrap_err().to_string();
        assert!(e.contains("unknown scheme gs://"), "{e}");
        assert!(e.contains("s3://"), "{e}");
        let e = Location::parse("s3:///lake").unwrap_err().to_string();
        assert!(e.contains("no bucket"), "{e}");
    }

    #[test]
    fn keys_under_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let Location::Object(o) = Location::local_as_object(dir.path()).unwrap() else {
            panic!("not an object location");
        };
        let p = o.path("t/date=2024-01-01/x.parquet");
        assert!(p.as_ref().ends_with("t/date=2024-01-01/x.parquet"), "{p}");
        assert!(o.join("t").as_str().starts_with("file:///"));
    }
}
