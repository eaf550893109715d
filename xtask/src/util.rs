//! Running commands, finding paths, and child processes that die with us.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub type Result<T = ()> = std::result::Result<T, String>;

/// Where things are.
#[derive(Clone)]
pub struct Ctx {
    pub root: PathBuf,
    pub target_dir: PathBuf,
    /// clippy-driver, when every build should be linted as it compiles (`cargo xtask test`).
    pub clippy: Option<PathBuf>,
}

impl Ctx {
    pub fn new() -> Ctx {
        // `cargo run` sets CARGO_MANIFEST_DIR for the process: the checkout that ran `cargo xtask`.
        // The compile-time value is only a fallback, because the clones share one target dir
        // (and so one `xtask` binary), so that value can name another checkout.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        // `cargo xtask bench gpu`'s bundle names its own folder: it holds the files the
        // bundle's commands read, where the repository's would be.
        let root = match std::env::var_os("FRESCO_XTASK_ROOT") {
            Some(root) => PathBuf::from(root),
            None => manifest_dir
                .parent()
                .expect("xtask lives in the workspace")
                .to_path_buf(),
        };
        // Build outputs live outside the clone, so fresh clones reuse them (see README).
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".cache/fresco/target"));
        // Tools installed by `cargo install` must be found by the commands we start.
        let cargo_bin = home().join(".cargo/bin");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths: Vec<PathBuf> = std::env::split_paths(&path).collect();
        if !paths.contains(&cargo_bin) {
            paths.insert(0, cargo_bin);
            // SAFETY: set once at start-up, before any thread is spawned.
            unsafe { std::env::set_var("PATH", std::env::join_paths(paths).expect("valid PATH")) };
        }
        // wgpu (the engine's Vulkan tests) and Chromium warn without a runtime directory.
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            let dir = std::env::temp_dir().join("fresco-xdg-runtime");
            if std::fs::create_dir_all(&dir).is_ok() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
                // SAFETY: as above, before any thread exists.
                unsafe { std::env::set_var("XDG_RUNTIME_DIR", dir) };
            }
        }
        Ctx {
            root,
            target_dir,
            clippy: None,
        }
    }

    /// A `cargo` command in the workspace, with the shared target directory.
    pub fn cargo(&self) -> Command {
        let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.current_dir(&self.root)
            .env("CARGO_TARGET_DIR", &self.target_dir);
        // clippy-driver as the workspace's compiler wrapper lints our crates while compiling
        // them (natively and for wasm32), so the dependency trees (Burn's above all) are compiled
        // once instead of once for `cargo clippy` and again for `cargo test`.
        if let Some(driver) = &self.clippy {
            c.env("RUSTC_WORKSPACE_WRAPPER", driver).env(
                "CLIPPY_ARGS",
                "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
            );
        }
        c
    }

    /// A binary built by the dev profile.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.target_dir.join("debug").join(name)
    }
}

pub fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Runs a command to completion, with its output on ours.
pub fn run(cmd: &mut Command) -> Result {
    let shown = show(cmd);
    println!("$ {shown}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

/// Runs a command and returns its stdout (stderr passes through).
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = show(cmd);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if !out.status.success() {
        return Err(format!("`{shown}` failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A child process killed when dropped, so no server outlives the task that started it.
pub struct Service {
    pub name: String,
    child: Child,
    /// The first line it printed on stdout.
    pub first_line: String,
}

impl Service {
    /// Starts `cmd` and waits (up to `timeout`) for its first stdout line, which announces its
    /// address; the rest of its stdout is drained in the background.
    pub fn start(name: &str, cmd: &mut Command, timeout: Duration) -> Result<Service> {
        let shown = show(cmd);
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not start {name} (`{shown}`): {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let started = Instant::now();
        let line = rx.recv_timeout(timeout).map_err(|_| {
            let _ = child.kill();
            format!("{name} did not start within {:?}", started.elapsed())
        })?;
        if line.is_empty() {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(format!("{name} exited before it was ready ({status})"));
        }
        Ok(Service {
            name: name.to_owned(),
            child,
            first_line: line.trim().to_owned(),
        })
    }

    /// The `http://…` URL in the first line.
    pub fn url(&self) -> Result<String> {
        self.first_line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "{} did not announce a URL: {:?}",
                    self.name, self.first_line
                )
            })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The most memory the process has held so far (Linux's `VmHWM`), in MiB; `None` elsewhere.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    /// Waits for the process to exit by itself.
    pub fn wait(mut self) -> Result {
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{} exited with {status}", self.name))
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP GET over a plain TCP socket (xtask has no dependencies): status and body.
pub fn http_get(url: &str) -> Result<(u16, String)> {
    http_request("GET", url, None, Duration::from_secs(10))
}

/// A minimal HTTP/1.1 request with an optional JSON body: status and body.
pub fn http_request(
    method: &str,
    url: &str,
    json: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http URL: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream =
        std::net::TcpStream::connect(host).map_err(|e| format!("cannot connect to {host}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let body = json.unwrap_or("");
    let headers = if json.is_some() {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    } else {
        String::new()
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n{body}"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Standard base64 (for `data:` URIs).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Copies one file, the error naming both paths.
/// Copies a file, making the folders it goes into.
pub fn copy(from: &Path, to: &Path) -> Result {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copy {} → {}: {e}", from.display(), to.display()))
}

/// Every file under `dir`, at any depth, with its size.
pub fn list_files(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> Result {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let meta = entry
            .metadata()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        if meta.is_dir() {
            list_files(&entry.path(), out)?;
        } else {
            out.push((entry.path(), meta.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_of_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
