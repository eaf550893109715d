//! File storage with rest.fal.ai's upload protocol (fal-api.md §10): initiate, `PUT` the bytes (or
//! the parts, then complete), `GET` them back. Files live on disk under the data directory; their
//! metadata in SQLite. A file becomes visible only once it is whole.

pub mod routes;

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::StatusCode;
use fresco_protocol::storage::{
    InitiateUpload, InitiateUploadResponse, ObjectLifecycle, UploadedPart,
};
use futures_util::StreamExt;
use rusqlite::{OptionalExtension, params};
use tokio::io::AsyncWriteExt;

use crate::db::{Db, now};
use crate::http::RouteError;

/// The largest single part of a multipart upload.
pub const MAX_PART_BYTES: u64 = 512 * 1024 * 1024;
/// The most parts an upload may have.
pub const MAX_PARTS: u32 = 10_000;
/// Uploads initiated but never finished are removed after this long.
const STALE_UPLOAD_SECS: f64 = 24.0 * 3600.0;

#[derive(Clone)]
pub struct Storage {
    db: Db,
    files: PathBuf,
    uploads: PathBuf,
    max_file_bytes: u64,
}

/// A stored file, ready to serve.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub path: PathBuf,
    pub content_type: String,
    pub size: u64,
    pub file_name: String,
}

struct Pending {
    key: String,
    file_name: String,
    multipart: bool,
    complete: bool,
}

impl Storage {
    pub fn open(db: Db, data_dir: &Path, max_file_bytes: u64) -> std::io::Result<Self> {
        let files = data_dir.join("files");
        let uploads = data_dir.join("uploads");
        std::fs::create_dir_all(&files)?;
        std::fs::create_dir_all(&uploads)?;
        Ok(Storage {
            db,
            files,
            uploads,
            max_file_bytes,
        })
    }

    /// Registers an upload and answers where to send it and the URL it will have.
    pub async fn initiate(
        &self,
        base_url: &str,
        req: InitiateUpload,
        lifecycle: Option<ObjectLifecycle>,
        multipart: bool,
    ) -> Result<InitiateUploadResponse, RouteError> {
        let content_type = req.content_type.trim().to_owned();
        if content_type.is_empty()
            || axum::http::HeaderValue::from_str(&content_type).is_err()
            || !content_type.contains('/')
        {
            return Err(RouteError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "content_type {:?} is not a valid MIME type",
                    req.content_type
                ),
            ));
        }
        let file_name = sanitize_file_name(&req.file_name, &content_type);
        let key = uuid::Uuid::new_v4().simple().to_string();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let expires_at = lifecycle
            .and_then(|l| l.expiration_duration_seconds)
            .map(|s| now() + s as f64);
        let (k, t, f, c) = (key.clone(), token.clone(), file_name.clone(), content_type);
        self.db
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO files (key, upload_token, file_name, content_type, multipart, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![k, t, f, c, multipart, now(), expires_at],
                )
            })
            .await?;
        let kind = if multipart { "multipart" } else { "upload" };
        Ok(InitiateUploadResponse {
            upload_url: format!("{base_url}/files/{kind}/{token}"),
            file_url: format!("{base_url}/files/{key}/{}", encode_segment(&file_name)),
        })
    }

    async fn pending(&self, token: &str) -> Result<Pending, RouteError> {
        let t = token.to_owned();
        let row = self
            .db
            .call(move |c| {
                c.query_row(
                    "SELECT key, file_name, multipart, complete FROM files WHERE upload_token = ?1",
                    [t],
                    |r| {
                        Ok(Pending {
                            key: r.get(0)?,
                            file_name: r.get(1)?,
                            multipart: r.get(2)?,
                            complete: r.get(3)?,
                        })
                    },
                )
                .optional()
            })
            .await?;
        let p = row.ok_or_else(|| {
            RouteError::new(StatusCode::NOT_FOUND, "Unknown or expired upload URL")
        })?;
        if p.complete {
            return Err(RouteError::new(
                StatusCode::CONFLICT,
                "This upload URL has already been used",
            ));
        }
        Ok(p)
    }

    /// `PUT {upload_url}`: the whole file in one request.
    pub async fn put(
        &self,
        base_url: &str,
        token: &str,
        declared_len: Option<u64>,
        body: Body,
    ) -> Result<String, RouteError> {
        let p = self.pending(token).await?;
        if p.multipart {
            return Err(RouteError::new(
                StatusCode::BAD_REQUEST,
                "This is a multipart upload: PUT its parts to {upload_url}/{n}",
            ));
        }
        check_declared(declared_len, self.max_file_bytes)?;
        let tmp = self.uploads.join(format!("{}.tmp", p.key));
        let size = write_body(&tmp, body, self.max_file_bytes).await?;
        self.finish(&p.key, &tmp, size).await?;
        Ok(format!(
            "{base_url}/files/{}/{}",
            p.key,
            encode_segment(&p.file_name)
        ))
    }

    /// `PUT {upload_url}/{n}`: one part of a multipart upload.
    pub async fn put_part(
        &self,
        token: &str,
        part: &str,
        declared_len: Option<u64>,
        body: Body,
    ) -> Result<UploadedPart, RouteError> {
        let p = self.pending(token).await?;
        if !p.multipart {
            return Err(RouteError::new(
                StatusCode::BAD_REQUEST,
                "This upload is not multipart: PUT the whole file to its upload URL",
            ));
        }
        let part_number: u32 = part
            .parse()
            .ok()
            .filter(|n| (1..=MAX_PARTS).contains(n))
            .ok_or_else(|| {
                RouteError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Part number must be 1 to {MAX_PARTS}, got {part:?}"),
                )
            })?;
        // The parts so far count against the file's limit as they arrive, not only at
        // `complete`: otherwise 10 000 parts could fill the disk first.
        let (k, n) = (p.key.clone(), part_number);
        let before: u64 = self
            .db
            .call(move |c| {
                c.query_row(
                    "SELECT COALESCE(SUM(size), 0) FROM file_parts WHERE key = ?1 AND part != ?2",
                    params![k, n],
                    |r| r.get::<_, i64>(0),
                )
            })
            .await? as u64;
        if before >= self.max_file_bytes {
            return Err(too_large(self.max_file_bytes));
        }
        let limit = MAX_PART_BYTES.min(self.max_file_bytes - before);
        check_declared(declared_len, limit)?;
        let dir = self.uploads.join(&p.key);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(RouteError::internal)?;
        let tmp = dir.join(format!("{part_number}.tmp"));
        let size = write_body(&tmp, body, limit).await?;
        tokio::fs::rename(&tmp, dir.join(part_number.to_string()))
            .await
            .map_err(RouteError::internal)?;
        let etag = uuid::Uuid::new_v4().simple().to_string();
        let (k, e) = (p.key.clone(), etag.clone());
        self.db
            .call(move |c| {
                c.execute(
                    "INSERT OR REPLACE INTO file_parts (key, part, etag, size) VALUES (?1, ?2, ?3, ?4)",
                    params![k, part_number, e, size as i64],
                )
            })
            .await?;
        Ok(UploadedPart { part_number, etag })
    }

    /// `POST {upload_url}/complete`: joins the listed parts, in order, into the file.
    pub async fn complete(
        &self,
        base_url: &str,
        token: &str,
        parts: &[UploadedPart],
    ) -> Result<String, RouteError> {
        let p = self.pending(token).await?;
        if !p.multipart {
            return Err(RouteError::new(
                StatusCode::BAD_REQUEST,
                "This upload is not multipart",
            ));
        }
        if parts.is_empty() {
            return Err(RouteError::new(
                StatusCode::BAD_REQUEST,
                "A multipart upload needs at least one part",
            ));
        }
        let k = p.key.clone();
        let stored: Vec<(u32, String, u64)> = self
            .db
            .call(move |c| {
                let mut stmt =
                    c.prepare("SELECT part, etag, size FROM file_parts WHERE key = ?1")?;
                let rows = stmt.query_map([k], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
                })?;
                rows.collect()
            })
            .await?;
        let mut total = 0u64;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 && part.part_number <= parts[i - 1].part_number {
                return Err(RouteError::new(
                    StatusCode::BAD_REQUEST,
                    "Parts must be listed in increasing partNumber order",
                ));
            }
            match stored.iter().find(|(n, _, _)| *n == part.part_number) {
                None => {
                    return Err(RouteError::new(
                        StatusCode::BAD_REQUEST,
                        format!("Part {} was never uploaded", part.part_number),
                    ));
                }
                Some((_, etag, _)) if *etag != part.etag => {
                    return Err(RouteError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "Part {} has etag {:?}, not {:?}",
                            part.part_number, etag, part.etag
                        ),
                    ));
                }
                Some((_, _, size)) => total += size,
            }
        }
        if total > self.max_file_bytes {
            return Err(too_large(self.max_file_bytes));
        }
        let dir = self.uploads.join(&p.key);
        let tmp = self.uploads.join(format!("{}.tmp", p.key));
        let numbers: Vec<u32> = parts.iter().map(|p| p.part_number).collect();
        let (d, t) = (dir.clone(), tmp.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut out = std::fs::File::create(&t)?;
            for n in numbers {
                let mut part = std::fs::File::open(d.join(n.to_string()))?;
                std::io::copy(&mut part, &mut out)?;
            }
            out.sync_all()
        })
        .await
        .map_err(RouteError::internal)?
        .map_err(RouteError::internal)?;
        self.finish(&p.key, &tmp, total).await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        let k = p.key.clone();
        self.db
            .call(move |c| c.execute("DELETE FROM file_parts WHERE key = ?1", [k]))
            .await?;
        Ok(format!(
            "{base_url}/files/{}/{}",
            p.key,
            encode_segment(&p.file_name)
        ))
    }

    /// Moves a whole file into place and marks it complete.
    async fn finish(&self, key: &str, tmp: &Path, size: u64) -> Result<(), RouteError> {
        tokio::fs::rename(tmp, self.files.join(key))
            .await
            .map_err(RouteError::internal)?;
        let k = key.to_owned();
        self.db
            .call(move |c| {
                c.execute(
                    "UPDATE files SET complete = 1, size = ?2 WHERE key = ?1",
                    params![k, size as i64],
                )
            })
            .await?;
        Ok(())
    }

    /// Stores bytes the server made (an endpoint's output) and answers their URL under
    /// `base_url`, as an upload would have.
    pub async fn save(
        &self,
        base_url: &str,
        file_name: &str,
        content_type: &str,
        bytes: Vec<u8>,
        lifecycle: Option<ObjectLifecycle>,
    ) -> Result<String, RouteError> {
        let file_name = sanitize_file_name(file_name, content_type);
        let key = uuid::Uuid::new_v4().simple().to_string();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let expires_at = lifecycle
            .and_then(|l| l.expiration_duration_seconds)
            .map(|s| now() + s as f64);
        let (k, t, f, c) = (
            key.clone(),
            token,
            file_name.clone(),
            content_type.to_owned(),
        );
        self.db
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO files (key, upload_token, file_name, content_type, multipart, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
                    params![k, t, f, c, now(), expires_at],
                )
            })
            .await?;
        let tmp = self.uploads.join(format!("{key}.tmp"));
        let size = bytes.len() as u64;
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(RouteError::internal)?;
        self.finish(&key, &tmp, size).await?;
        Ok(format!(
            "{base_url}/files/{key}/{}",
            encode_segment(&file_name)
        ))
    }

    /// A complete, unexpired file by key and name.
    pub async fn get(&self, key: &str, name: &str) -> Result<Option<StoredFile>, RouteError> {
        let k = key.to_owned();
        let row: Option<(String, String, i64)> = self
            .db
            .call(move |c| {
                c.query_row(
                    "SELECT file_name, content_type, size FROM files
                     WHERE key = ?1 AND complete = 1 AND (expires_at IS NULL OR expires_at > ?2)",
                    params![k, now()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
            })
            .await?;
        Ok(row.filter(|(file_name, _, _)| file_name == name).map(
            |(file_name, content_type, size)| StoredFile {
                path: self.files.join(key),
                content_type,
                size: size as u64,
                file_name,
            },
        ))
    }

    /// Deletes expired files and uploads left unfinished for a day.
    pub async fn sweep(&self) -> Result<usize, crate::db::DbError> {
        let keys: Vec<(String, bool)> = self
            .db
            .call(|c| {
                let mut stmt = c.prepare(
                    "SELECT key, complete FROM files WHERE (expires_at IS NOT NULL AND expires_at <= ?1)
                        OR (complete = 0 AND created_at < ?2)",
                )?;
                let rows = stmt.query_map(params![now(), now() - STALE_UPLOAD_SECS], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        for (key, complete) in &keys {
            if *complete {
                let _ = tokio::fs::remove_file(self.files.join(key)).await;
            } else {
                let _ = tokio::fs::remove_dir_all(self.uploads.join(key)).await;
                let _ = tokio::fs::remove_file(self.uploads.join(format!("{key}.tmp"))).await;
            }
            let k = key.clone();
            self.db
                .call(move |c| {
                    c.execute("DELETE FROM file_parts WHERE key = ?1", [&k])?;
                    c.execute("DELETE FROM files WHERE key = ?1", [&k])
                })
                .await?;
        }
        Ok(keys.len())
    }
}

fn too_large(limit: u64) -> RouteError {
    RouteError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("The upload is larger than the limit of {limit} bytes"),
    )
}

fn check_declared(declared: Option<u64>, limit: u64) -> Result<(), RouteError> {
    match declared {
        Some(n) if n > limit => Err(too_large(limit)),
        _ => Ok(()),
    }
}

/// Streams a body into `path`, refusing it once it passes `limit` bytes. On any failure the
/// partial file is removed.
async fn write_body(path: &Path, body: Body, limit: u64) -> Result<u64, RouteError> {
    let result = async {
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(RouteError::internal)?;
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                RouteError::new(
                    StatusCode::BAD_REQUEST,
                    format!("The upload was interrupted: {e}"),
                )
            })?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(limit));
            }
            file.write_all(&chunk).await.map_err(RouteError::internal)?;
        }
        file.sync_all().await.map_err(RouteError::internal)?;
        Ok(size)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
    result
}

/// A file name safe to put in a URL path and a `Content-Disposition`: no separators or control
/// characters; a default `{millis}.{ext}` (as the client makes) when nothing is left.
pub fn sanitize_file_name(name: &str, content_type: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '/' | '\\' | '"'))
        .collect::<String>()
        .trim()
        .trim_start_matches('.')
        .chars()
        .take(200)
        .collect();
    if !cleaned.is_empty() {
        return cleaned;
    }
    let ext = content_type
        .split('/')
        .nth(1)
        .and_then(|s| s.split(['-', ';']).next())
        .filter(|s| !s.is_empty())
        .unwrap_or("bin");
    format!("{}.{ext}", (now() * 1000.0) as u64)
}

/// Percent-encodes a URL path segment.
pub fn encode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_separators_and_get_defaults() {
        assert_eq!(
            sanitize_file_name("../../etc/passwd", "text/plain"),
            "etcpasswd"
        );
        assert_eq!(
            sanitize_file_name("cat photo.png", "image/png"),
            "cat photo.png"
        );
        let d = sanitize_file_name("", "image/png");
        assert!(d.ends_with(".png") && d.len() > 4, "{d}");
        assert!(sanitize_file_name("", "application/octet-stream").ends_with(".octet"));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("cat photo#1.png"), "cat%20photo%231.png");
    }
}
