//! Storage bodies (fal-api.md §10): upload initiate, multipart parts and completion, lifecycles.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Files larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 90 * 1024 * 1024;
/// The size of every part but the last.
pub const MULTIPART_CHUNK_SIZE: u64 = 10 * 1024 * 1024;

/// The `storage_type` values an initiate accepts (`fal-cdn-v3` is what the client sends).
pub const STORAGE_TYPE_NAMES: [&str; 2] = ["fal-cdn-v3", "fal-cdn"];

/// Body of `POST /storage/upload/initiate[-multipart]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitiateUpload {
    pub content_type: String,
    pub file_name: String,
}

/// Answer of an upload initiate: where to `PUT` the bytes, and the URL the file will have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitiateUploadResponse {
    pub upload_url: String,
    pub file_url: String,
}

/// Answer of a part `PUT`, and an element of the completion body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadedPart {
    pub part_number: u32,
    pub etag: String,
}

/// Body of `POST {upload_url}/complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteMultipart {
    pub parts: Vec<UploadedPart>,
}

/// The JSON of `x-fal-object-lifecycle` / `x-fal-object-lifecycle-preference`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ObjectLifecycle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_duration_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_acl: Option<Value>,
}

/// The client's `ObjectExpiration` names, in seconds (`never` is no expiration).
pub fn expiration_seconds(name: &str) -> Option<Option<u64>> {
    Some(match name {
        "never" => None,
        "immediate" => Some(60),
        "1h" => Some(3600),
        "1d" => Some(86_400),
        "7d" => Some(604_800),
        "30d" => Some(2_592_000),
        "1y" => Some(31_536_000),
        _ => return None,
    })
}

/// The name an upload gets when its `File` has none: `{now_ms}.{ext}`, `ext` being the content
/// type's subtype cut at the first `-` or `;` (`image/png` → `png`, `application/octet-stream` →
/// `octet`, `image/svg+xml` → `svg+xml`), as `@fal-ai/client` names it (§10.2). `None` for a
/// content type without `/` (where the original throws a `TypeError`).
pub fn default_file_name(content_type: &str, now_ms: u64) -> Option<String> {
    let slash = content_type.bytes().position(|b| b == b'/')?;
    let subtype = content_type.get(slash + 1..)?;
    let end = subtype
        .bytes()
        .position(|b| b == b'-' || b == b';')
        .unwrap_or(subtype.len());
    Some([&crate::text::decimal(now_ms), ".", subtype.get(..end)?].concat())
}

/// The number of parts a multipart upload of `size` bytes has.
pub fn multipart_part_count(size: u64) -> u64 {
    size.div_ceil(MULTIPART_CHUNK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parts_are_camel_case_on_the_wire() {
        let body = CompleteMultipart {
            parts: vec![UploadedPart {
                part_number: 1,
                etag: "e1".into(),
            }],
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"parts":[{"partNumber":1,"etag":"e1"}]})
        );
    }

    #[test]
    fn a_91_mib_file_has_ten_parts() {
        assert_eq!(multipart_part_count(91 * 1024 * 1024), 10);
        assert_eq!(multipart_part_count(MULTIPART_CHUNK_SIZE), 1);
        assert_eq!(multipart_part_count(MULTIPART_CHUNK_SIZE + 1), 2);
    }

    #[test]
    fn default_file_names_take_the_subtype() {
        assert_eq!(
            default_file_name("image/png", 17).as_deref(),
            Some("17.png")
        );
        assert_eq!(
            default_file_name("application/octet-stream", 1).as_deref(),
            Some("1.octet")
        );
        assert_eq!(
            default_file_name("image/svg+xml", 2).as_deref(),
            Some("2.svg+xml")
        );
        assert_eq!(
            default_file_name("text/plain;charset=utf-8", 3).as_deref(),
            Some("3.plain")
        );
        assert_eq!(default_file_name("png", 4), None);
    }

    #[test]
    fn lifecycles_omit_absent_keys() {
        assert_eq!(
            serde_json::to_string(&ObjectLifecycle::default()).unwrap(),
            "{}"
        );
        let l: ObjectLifecycle =
            serde_json::from_str(r#"{"expiration_duration_seconds":3600}"#).unwrap();
        assert_eq!(l.expiration_duration_seconds, Some(3600));
        assert_eq!(expiration_seconds("1d"), Some(Some(86_400)));
        assert_eq!(expiration_seconds("never"), Some(None));
        assert_eq!(expiration_seconds("2d"), None);
    }
}
