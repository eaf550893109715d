//! Reading a JSON request body field by field into typed values, collecting every problem as a
//! pydantic-style validation error (the messages and types of pydantic v1, which fal's examples
//! show: `"field required"`, `"value_error.missing"`).

use serde_json::{Map, Value, json};

use crate::error::{ValidationErrorBody, ValidationErrorItem};

/// Reads the fields of one request body. Every accessor records what is wrong and returns `None`
/// for a missing or invalid value, so one pass reports all errors at once.
pub struct Validator<'a> {
    body: Option<&'a Map<String, Value>>,
    errors: Vec<ValidationErrorItem>,
    /// Whether file URLs may be `blob:` URLs (a call run in the page's own browser).
    blob_urls: bool,
}

impl<'a> Validator<'a> {
    pub fn new(input: &'a Value) -> Self {
        match input {
            Value::Object(map) => Validator {
                body: Some(map),
                errors: Vec::new(),
                blob_urls: false,
            },
            _ => Validator {
                body: None,
                blob_urls: false,
                errors: vec![ValidationErrorItem::new(
                    vec!["body".into()],
                    "value is not a valid dict",
                    "type_error.dict",
                )],
            },
        }
    }

    /// Also takes `blob:` URLs as file URLs: for a call that runs in the browser whose page made
    /// them (the local engine), never for one a server fetches.
    pub fn with_blob_urls(mut self, allowed: bool) -> Self {
        self.blob_urls = allowed;
        self
    }

    /// The raw value of a field (`None` when absent).
    pub fn raw(&self, field: &str) -> Option<&'a Value> {
        self.body.and_then(|b| b.get(field))
    }

    /// Records an error on a field.
    pub fn error(&mut self, field: &str, msg: impl Into<String>, kind: impl Into<String>) {
        self.errors
            .push(ValidationErrorItem::body_field(field, msg, kind));
    }

    pub fn push(&mut self, item: ValidationErrorItem) {
        self.errors.push(item);
    }

    /// The value of a field that must be present. `null` is refused unless `nullable`.
    fn present(&mut self, field: &str, required: bool, nullable: bool) -> Option<&'a Value> {
        self.body?;
        match self.raw(field) {
            None if required => {
                self.error(field, "field required", "value_error.missing");
                None
            }
            None => None,
            Some(Value::Null) if nullable => None,
            Some(Value::Null) => {
                self.error(
                    field,
                    "none is not an allowed value",
                    "type_error.none.not_allowed",
                );
                None
            }
            Some(v) => Some(v),
        }
    }

    /// A string field.
    pub fn string(&mut self, field: &str, required: bool) -> Option<String> {
        match self.present(field, required, false)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.error(field, "str type expected", "type_error.str");
                None
            }
        }
    }

    /// A non-empty string field.
    pub fn non_empty_string(&mut self, field: &str, required: bool) -> Option<String> {
        let s = self.string(field, required)?;
        if s.trim().is_empty() {
            self.push(
                ValidationErrorItem::body_field(
                    field,
                    "ensure this value has at least 1 characters",
                    "value_error.any_str.min_length",
                )
                .with_ctx(json!({"limit_value": 1})),
            );
            return None;
        }
        Some(s)
    }

    /// A URL field: an `http(s)://` URL or a `data:` URI (or a `blob:` URL, where allowed).
    pub fn file_url(&mut self, field: &str, required: bool) -> Option<String> {
        let s = self.string(field, required)?;
        let lower = s.trim_start().to_ascii_lowercase();
        let scheme_ok = lower.starts_with("data:")
            || ((lower.starts_with("http://")
                || lower.starts_with("https://")
                || (self.blob_urls && lower.starts_with("blob:")))
                && url::Url::parse(s.trim()).is_ok());
        if !scheme_ok {
            self.error(
                field,
                if self.blob_urls {
                    "invalid or missing URL scheme: expected an http(s) URL, a data: URI or a blob: URL"
                } else {
                    "invalid or missing URL scheme: expected an http(s) URL or a data: URI"
                },
                "value_error.url.scheme",
            );
            return None;
        }
        Some(s.trim().to_owned())
    }

    /// An integer field within `[min, max]` (integral floats such as `30.0` are accepted, as
    /// pydantic does). `null` counts as absent when `nullable`.
    pub fn integer(
        &mut self,
        field: &str,
        nullable: bool,
        min: Option<i128>,
        max: Option<i128>,
    ) -> Option<i128> {
        let v = self.present(field, false, nullable)?;
        let n = match v {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1.8e19)
                        .map(|f| f as i128)
                }),
            _ => None,
        };
        let Some(n) = n else {
            self.error(field, "value is not a valid integer", "type_error.integer");
            return None;
        };
        self.bounds(
            field,
            n as f64,
            min.map(|m| m as f64),
            max.map(|m| m as f64),
            |x| json!(x as i128),
        )?;
        Some(n)
    }

    /// A number field within `[min, max]`.
    pub fn number(
        &mut self,
        field: &str,
        nullable: bool,
        min: Option<f64>,
        max: Option<f64>,
    ) -> Option<f64> {
        let v = self.present(field, false, nullable)?;
        let Some(n) = v.as_f64() else {
            self.error(field, "value is not a valid float", "type_error.float");
            return None;
        };
        self.bounds(field, n, min, max, |x| json!(x))?;
        Some(n)
    }

    /// A boolean field.
    pub fn boolean(&mut self, field: &str) -> Option<bool> {
        match self.present(field, false, false)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.error(
                    field,
                    "value could not be parsed to a boolean",
                    "type_error.bool",
                );
                None
            }
        }
    }

    /// A string field that must be one of `allowed`.
    pub fn one_of(&mut self, field: &str, allowed: &[&str]) -> Option<String> {
        let s = self.string(field, false)?;
        if allowed.contains(&s.as_str()) {
            return Some(s);
        }
        let permitted = allowed
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(", ");
        self.push(
            ValidationErrorItem::body_field(
                field,
                format!("value is not a valid enumeration member; permitted: {permitted}"),
                "type_error.enum",
            )
            .with_ctx(json!({ "enum_values": allowed })),
        );
        None
    }

    /// Refuses each of `fields` that is present and not `null`: fields of fal's schema this
    /// project does not implement yet are named, never silently ignored.
    pub fn unsupported(&mut self, fields: &[&str]) {
        for f in fields {
            if matches!(self.raw(f), Some(v) if !v.is_null()) {
                self.error(
                    f,
                    format!("'{f}' is not supported by this server yet"),
                    "value_error.unsupported",
                );
            }
        }
    }

    fn bounds(
        &mut self,
        field: &str,
        n: f64,
        min: Option<f64>,
        max: Option<f64>,
        limit: impl Fn(f64) -> Value,
    ) -> Option<()> {
        if let Some(min) = min.filter(|m| n < *m) {
            self.push(
                ValidationErrorItem::body_field(
                    field,
                    format!(
                        "ensure this value is greater than or equal to {}",
                        fmt_limit(min)
                    ),
                    "value_error.number.not_ge",
                )
                .with_ctx(json!({ "limit_value": limit(min) })),
            );
            return None;
        }
        if let Some(max) = max.filter(|m| n > *m) {
            self.push(
                ValidationErrorItem::body_field(
                    field,
                    format!(
                        "ensure this value is less than or equal to {}",
                        fmt_limit(max)
                    ),
                    "value_error.number.not_le",
                )
                .with_ctx(json!({ "limit_value": limit(max) })),
            );
            return None;
        }
        Some(())
    }

    /// All errors, or `Ok` when there were none.
    pub fn finish(self) -> Result<(), ValidationErrorBody> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrorBody {
                detail: self.errors,
            })
        }
    }
}

fn fmt_limit(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        x.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_object_body_is_one_error_on_body() {
        let v = json!([1, 2]);
        let mut val = Validator::new(&v);
        assert_eq!(val.string("prompt", true), None);
        let err = val.finish().unwrap_err();
        assert_eq!(err.detail.len(), 1);
        assert_eq!(err.detail[0].kind, "type_error.dict");
    }

    #[test]
    fn integers_accept_integral_floats_and_refuse_the_rest() {
        let v = json!({"a": 30.0, "b": 2.5, "c": "3", "d": 0, "e": 200, "f": null});
        let mut val = Validator::new(&v);
        assert_eq!(val.integer("a", false, Some(1), Some(150)), Some(30));
        assert_eq!(val.integer("b", false, None, None), None);
        assert_eq!(val.integer("c", false, None, None), None);
        assert_eq!(val.integer("d", false, Some(1), None), None);
        assert_eq!(val.integer("e", false, None, Some(150)), None);
        assert_eq!(val.integer("f", true, None, None), None);
        assert_eq!(val.integer("missing", false, None, None), None);
        let err = val.finish().unwrap_err();
        let kinds: Vec<_> = err.detail.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "type_error.integer",
                "type_error.integer",
                "value_error.number.not_ge",
                "value_error.number.not_le"
            ]
        );
        assert_eq!(
            err.detail[2].msg,
            "ensure this value is greater than or equal to 1"
        );
        assert_eq!(err.detail[2].ctx, Some(json!({"limit_value": 1})));
    }

    #[test]
    fn null_is_refused_where_the_schema_has_no_none() {
        let v = json!({"negative_prompt": null});
        let mut val = Validator::new(&v);
        assert_eq!(val.string("negative_prompt", false), None);
        let err = val.finish().unwrap_err();
        assert_eq!(err.detail[0].kind, "type_error.none.not_allowed");
    }

    #[test]
    fn enums_list_what_is_permitted() {
        let v = json!({"image_format": "gif"});
        let mut val = Validator::new(&v);
        assert_eq!(val.one_of("image_format", &["jpeg", "png"]), None);
        let err = val.finish().unwrap_err();
        assert_eq!(
            err.detail[0].msg,
            "value is not a valid enumeration member; permitted: 'jpeg', 'png'"
        );
    }

    #[test]
    fn file_urls_need_a_scheme_we_can_fetch() {
        let v = json!({"a": "https://x.test/i.png", "b": "data:image/png;base64,AAAA", "c": "/etc/passwd",
                       "d": "ftp://x/y", "e": "http://"});
        let mut val = Validator::new(&v);
        assert!(val.file_url("a", true).is_some());
        assert!(val.file_url("b", true).is_some());
        assert!(val.file_url("c", true).is_none());
        assert!(val.file_url("d", true).is_none());
        assert!(val.file_url("e", true).is_none());
        assert_eq!(val.finish().unwrap_err().detail.len(), 3);
        // A page's blob: URL: only for a call run in that page's browser.
        let v = json!({"a": "blob:https://app.test/6f1c2d1e-0000-4000-8000-000000000000"});
        assert!(Validator::new(&v).file_url("a", true).is_none());
        let mut local = Validator::new(&v).with_blob_urls(true);
        assert!(local.file_url("a", true).is_some());
        let v = json!({"a": "ftp://x/y"});
        let mut local = Validator::new(&v).with_blob_urls(true);
        assert!(local.file_url("a", true).is_none());
    }

    #[test]
    fn unsupported_fields_are_named() {
        let v = json!({"loras": [{"path": "x"}], "embeddings": null});
        let mut val = Validator::new(&v);
        val.unsupported(&["loras", "embeddings", "controlnets"]);
        let err = val.finish().unwrap_err();
        assert_eq!(err.detail.len(), 1);
        assert_eq!(err.detail[0].loc, vec!["body".into(), "loras".into()]);
    }
}
