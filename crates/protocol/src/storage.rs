//! Storage bodies (fal-api.md §10): upload initiate, multipart parts and completion, lifecycles.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    fn lifecycles_omit_absent_keys() {
        assert_eq!(
            serde_json::to_string(&ObjectLifecycle::default()).unwrap(),
            "{}"
        );
        let l: ObjectLifecycle =
            serde_json::from_str(r#"{"expiration_duration_seconds":3600}"#).unwrap();
        assert_eq!(l.expiration_duration_seconds, Some(3600));
    }
}
