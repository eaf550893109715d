//! Endpoint ids: `owner/alias[/path]`, the legacy numeric form `12345-my-app`, and the
//! `workflows/` and `comfy/` namespaces (fal-api.md §3.1, §3.2, §3.5).

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::text::{find_byte, split_once_byte};

/// The first path segments that name a namespace rather than an owner.
pub const NAMESPACES: [&str; 2] = ["workflows", "comfy"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAppId(pub String);

impl InvalidAppId {
    /// The client's message, word for word.
    pub fn message(&self) -> String {
        [
            "Invalid app id: ",
            &self.0,
            ". Must be in the format <appOwner>/<appId>",
        ]
        .concat()
    }
}

impl fmt::Display for InvalidAppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl core::error::Error for InvalidAppId {}

/// Normalises an endpoint id the way `@fal-ai/client` does: an id containing `/` is returned
/// unchanged; `12345-my-app` becomes `12345/my-app`; anything else is an error.
pub fn ensure_endpoint_id_format(id: &str) -> Result<String, InvalidAppId> {
    // Byte searches (`crate::text`), not `contains`/`split_once`: see that module for why.
    if find_byte(id, b'/').is_some() {
        return Ok(id.to_owned());
    }
    if let Some((number, name)) = split_once_byte(id, b'-')
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Ok([number, "/", name].concat());
    }
    Err(InvalidAppId(id.to_owned()))
}

/// A parsed endpoint id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointId {
    pub namespace: Option<String>,
    pub owner: String,
    pub alias: String,
    pub path: Option<String>,
}

impl EndpointId {
    /// Parses an id as `parseEndpointId` does (after [`ensure_endpoint_id_format`]).
    pub fn parse(id: &str) -> Result<Self, InvalidAppId> {
        let normalized = ensure_endpoint_id_format(id)?;
        let parts: Vec<&str> = normalized.split('/').collect();
        let (namespace, rest) = if NAMESPACES.contains(&parts[0]) {
            (Some(parts[0].to_owned()), &parts[1..])
        } else {
            (None, &parts[..])
        };
        let owner = rest.first().copied().unwrap_or_default().to_owned();
        let alias = rest.get(1).copied().unwrap_or_default().to_owned();
        let path = rest
            .get(2..)
            .map(|p| crate::text::join(p, "/"))
            .filter(|p| !p.is_empty());
        Ok(EndpointId {
            namespace,
            owner,
            alias,
            path,
        })
    }

    /// Parses an id and insists on a non-empty owner and alias: what a server needs before it
    /// can route a request (the client itself accepts `a/` and sends it on).
    pub fn parse_strict(id: &str) -> Result<Self, InvalidAppId> {
        let parsed = Self::parse(id)?;
        if parsed.owner.is_empty() || parsed.alias.is_empty() {
            return Err(InvalidAppId(id.to_owned()));
        }
        Ok(parsed)
    }

    /// `[namespace/]owner/alias`: the part that queue status, result and cancel use (§3.5).
    pub fn app_id(&self) -> String {
        match &self.namespace {
            Some(ns) => [ns, "/", &self.owner, "/", &self.alias].concat(),
            None => [&self.owner, "/", &self.alias].concat(),
        }
    }
}

/// The full id, sub-path included: what run, submit and stream use (§3.5).
impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.app_id())?;
        if let Some(path) = &self.path {
            write!(f, "/{path}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ns: Option<&str>, owner: &str, alias: &str, path: Option<&str>) -> EndpointId {
        EndpointId {
            namespace: ns.map(str::to_owned),
            owner: owner.into(),
            alias: alias.into(),
            path: path.map(str::to_owned),
        }
    }

    #[test]
    fn ids_with_a_slash_are_kept_as_they_are() {
        assert_eq!(
            ensure_endpoint_id_format("fal-ai/inpaint").unwrap(),
            "fal-ai/inpaint"
        );
        assert_eq!(ensure_endpoint_id_format("a/").unwrap(), "a/");
    }

    #[test]
    fn legacy_numeric_ids_become_owner_slash_alias() {
        assert_eq!(
            ensure_endpoint_id_format("12345-my-app").unwrap(),
            "12345/my-app"
        );
        assert_eq!(ensure_endpoint_id_format("1-a-b-c").unwrap(), "1/a-b-c");
    }

    #[test]
    fn bare_names_are_refused_with_the_clients_message() {
        for bad in ["lora", "", "12345-", "-app", "12a-app", "12345-my_app"] {
            let err = ensure_endpoint_id_format(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("Invalid app id: {bad}. Must be in the format <appOwner>/<appId>")
            );
        }
    }

    #[test]
    fn parses_the_documented_examples() {
        assert_eq!(
            EndpointId::parse("fal-ai/inpaint").unwrap(),
            ep(None, "fal-ai", "inpaint", None)
        );
        assert_eq!(
            EndpointId::parse("fal-ai/flux/dev").unwrap(),
            ep(None, "fal-ai", "flux", Some("dev"))
        );
        assert_eq!(
            EndpointId::parse("fal-ai/flux-pro/v1.1-ultra/redux").unwrap(),
            ep(None, "fal-ai", "flux-pro", Some("v1.1-ultra/redux"))
        );
        assert_eq!(
            EndpointId::parse("workflows/me/wf/sub").unwrap(),
            ep(Some("workflows"), "me", "wf", Some("sub"))
        );
        assert_eq!(
            EndpointId::parse("comfy/me/wf").unwrap(),
            ep(Some("comfy"), "me", "wf", None)
        );
        assert_eq!(
            EndpointId::parse("12345-my-app").unwrap(),
            ep(None, "12345", "my-app", None)
        );
    }

    #[test]
    fn app_id_drops_the_path_and_display_keeps_it() {
        let id = EndpointId::parse("fal-ai/flux/dev").unwrap();
        assert_eq!(id.app_id(), "fal-ai/flux");
        assert_eq!(id.to_string(), "fal-ai/flux/dev");
        let wf = EndpointId::parse("workflows/owner/wf/a/b").unwrap();
        assert_eq!(wf.app_id(), "workflows/owner/wf");
        assert_eq!(wf.to_string(), "workflows/owner/wf/a/b");
    }

    #[test]
    fn strict_parsing_needs_owner_and_alias() {
        assert!(EndpointId::parse_strict("a/").is_err());
        assert!(EndpointId::parse_strict("workflows/me").is_err());
        assert!(EndpointId::parse_strict("a/b").is_ok());
    }
}
