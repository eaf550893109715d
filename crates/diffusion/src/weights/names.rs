//! Names that come from outside — a model server's headers (`x-repo-commit`, `ETag`), a shard
//! index's file names, a `model_name`'s revision, a repository-relative path — checked before any
//! of them becomes part of a path or a URL. A hostile server must not be able to name a file
//! outside the cache (`/etc/x`, `../../x`, `C:\x`), nor a folder where one file is expected.

use super::WeightsError;

/// The longest name accepted for a revision, a repository path or an etag (bytes).
const MAX_NAME: usize = 1024;

fn refuse(what: &str, name: &str, why: &str) -> WeightsError {
    // Debug-quoted and cut: the name is hostile, and may be long or full of control bytes.
    let shown: String = name.chars().take(80).collect();
    WeightsError::Config(format!("refused {what} {shown:?}: {why}"))
}

/// A git commit as huggingface.co names it (`x-repo-commit`): 40 hexadecimal digits.
pub fn commit(name: &str) -> Result<&str, WeightsError> {
    if name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(name)
    } else {
        Err(refuse(
            "the commit",
            name,
            "a commit is 40 hexadecimal digits",
        ))
    }
}

/// One path component: not empty, not `.` or `..`, no separator (`/`, `\`), no NUL or other
/// control character, no `:` (a drive or stream on Windows).
fn component_ok(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && !c
            .chars()
            .any(|ch| ch == '/' || ch == '\\' || ch == ':' || ch.is_control())
}

/// A path inside a repository (`unet/config.json`): relative, `/`-separated components, each
/// one [`component_ok`].
pub fn repo_path(rel: &str) -> Result<&str, WeightsError> {
    if rel.is_empty() || rel.len() > MAX_NAME {
        return Err(refuse("the repository path", rel, "empty or too long"));
    }
    if rel.split('/').all(component_ok) {
        Ok(rel)
    } else {
        Err(refuse(
            "the repository path",
            rel,
            "a repository path is relative, with no empty, `.` or `..` parts and no `\\` or `:`",
        ))
    }
}

/// A file name where exactly one file of a folder is meant (a shard listed by an index).
pub fn file_name(name: &str) -> Result<&str, WeightsError> {
    if name.len() <= 255 && component_ok(name) {
        Ok(name)
    } else {
        Err(refuse(
            "the file name",
            name,
            "a file name is one path component (no `/`, `\\`, `..` or `:`)",
        ))
    }
}

/// A revision (`main`, `fp16`, `refs/pr/1`, a commit): ASCII letters, digits, `-_.` and `/`
/// between non-empty parts that are not `.` or `..`.
pub fn revision(name: &str) -> Result<&str, WeightsError> {
    let chars_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if !name.is_empty() && name.len() <= 255 && chars_ok && name.split('/').all(component_ok) {
        Ok(name)
    } else {
        Err(refuse(
            "the revision",
            name,
            "a revision is letters, digits, `-_.` and `/` between parts, without `..`",
        ))
    }
}

/// The name of the blob an `ETag` is stored under. Hugging Face's etags are a git blob id (40
/// hex digits) or an LFS file's SHA-256 (64): those are kept, lowercased, so the cache stays
/// the one `huggingface_hub` reads. Any other etag is hashed (`etag-<sha256>`): a server's
/// header never becomes a file name as it is.
#[cfg(not(target_arch = "wasm32"))]
pub fn blob_name(etag: &str) -> String {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    if (etag.len() == 40 || etag.len() == 64) && hex(etag) {
        return etag.to_ascii_lowercase();
    }
    format!("etag-{}", sha256_hex(etag.as_bytes()))
}

/// The SHA-256 of `bytes`, as 64 lowercase hex digits.
#[cfg(not(target_arch = "wasm32"))]
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_forty_hex_digits() {
        let c = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(commit(c).unwrap(), c);
        for bad in [
            "",
            "main",
            "/some/dir",
            "../../../../tmp",
            &c[..39],
            &format!("{c}0"),
            "0123456789abcdef0123456789abcdef0123456/",
            "g123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(commit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repository_paths_stay_inside() {
        for good in [
            "model_index.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "a/b/c.json",
        ] {
            assert_eq!(repo_path(good).unwrap(), good);
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "unet/../../x",
            "unet/./x",
            "unet//x",
            "unet/",
            "unet\\..\\x",
            "C:/x",
            "c:x",
            "a\0b",
            "a\nb",
        ] {
            assert!(repo_path(bad).is_err(), "{bad:?}");
        }
        assert!(repo_path(&"a".repeat(MAX_NAME + 1)).is_err());
    }

    #[test]
    fn file_names_are_one_component() {
        assert!(file_name("diffusion_pytorch_model-00001-of-00002.safetensors").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/abs",
            "..\\x",
            "x:y",
            &"a".repeat(256),
        ] {
            assert!(file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn revisions_are_branch_like() {
        for good in ["main", "fp16", "refs/pr/1", "v1.0_rc-2"] {
            assert_eq!(revision(good).unwrap(), good);
        }
        for bad in [
            "", "..", "../x", "a/../b", "/main", "main/", "a b", "a\\b", "ä",
        ] {
            assert!(revision(bad).is_err(), "{bad:?}");
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn hub_etags_are_kept_and_others_hashed() {
        let sha = "A1B2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
        assert_eq!(blob_name(sha), sha.to_ascii_lowercase());
        let git = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(blob_name(git), git);
        let hostile = blob_name("../../../../tmp/owned");
        assert!(
            hostile.starts_with("etag-") && hostile.len() == 5 + 64,
            "{hostile}"
        );
        assert!(file_name(&hostile).is_ok());
        // Different etags, different blobs; the same etag, the same blob.
        assert_ne!(blob_name("a"), blob_name("b"));
        assert_eq!(blob_name("x-1"), blob_name("x-1"));
        // SHA-256 of "abc" (FIPS 180-2's example).
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
