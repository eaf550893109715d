//! What reading a model's files reports — the one vocabulary of download progress, natively
//! (the hub cache, `hub.rs`) and in a browser (`fetch` and the model cache, `url_repo.rs`, `cache.rs`) — and the one
//! place that words it for people ([`ProgressLines`]): the server's request logs, the browser's
//! call logs and the CLI's stderr all read the same lines.

use std::sync::atomic::{AtomicU64, Ordering};

/// One step of reading a repository's file (`file` is its path in the repository).
#[derive(Debug, Clone, Copy)]
pub enum Fetch<'a> {
    /// A download starts; `from` bytes of it are there already (a resumed download).
    Download {
        file: &'a str,
        total: Option<u64>,
        from: u64,
    },
    Progress {
        file: &'a str,
        done: u64,
        total: Option<u64>,
    },
    Downloaded {
        file: &'a str,
        bytes: u64,
    },
    /// The download broke off after `done` bytes; it is tried again from there.
    Retry {
        file: &'a str,
        done: u64,
        error: &'a str,
    },
    /// Read from a cache, without the network.
    Cached {
        file: &'a str,
        bytes: u64,
    },
}

/// Where a repository reports its [`Fetch`] steps.
#[cfg(not(target_arch = "wasm32"))]
pub type Observer = Box<dyn Fn(Fetch<'_>) + Send + Sync>;
/// Where a repository reports its [`Fetch`] steps.
#[cfg(target_arch = "wasm32")]
pub type Observer = std::rc::Rc<dyn Fn(Fetch<'_>)>;

/// An observer that reports nothing.
pub fn quiet() -> Observer {
    #[cfg(not(target_arch = "wasm32"))]
    return Box::new(|_| {});
    #[cfg(target_arch = "wasm32")]
    return std::rc::Rc::new(|_| {});
}

/// `12.3 MB`.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Files smaller than this get no lines of their own (a model's configs would drown the rest).
const WORTH_A_LINE: u64 = 1_000_000;

/// Download steps as lines for a log: a file's start (or resume), each further tenth of it, its
/// end, a broken-off download being resumed, a file read from the cache. Files under 1 MB are
/// silent but for a retry. One per repository being read (it follows one download at a time).
#[derive(Debug, Default)]
pub struct ProgressLines {
    /// The tenth of the current download last reported.
    tenth: AtomicU64,
}

impl ProgressLines {
    pub fn new() -> Self {
        Self::default()
    }

    /// The line for `step`, if it deserves one.
    pub fn line(&self, step: Fetch<'_>) -> Option<String> {
        let big = |bytes: Option<u64>| bytes.is_none_or(|b| b >= WORTH_A_LINE);
        match step {
            Fetch::Download { file, total, from } => {
                self.tenth
                    .store(total.map_or(0, |t| from * 10 / t.max(1)), Ordering::Relaxed);
                let size = total.map_or_else(String::new, |t| format!(" ({})", megabytes(t)));
                big(total).then(|| {
                    if from > 0 {
                        format!("resuming {file}{size} at {}", megabytes(from))
                    } else {
                        format!("downloading {file}{size}")
                    }
                })
            }
            Fetch::Progress { file, done, total } => {
                let t = total.filter(|&t| t >= WORTH_A_LINE)?;
                let tenth = done * 10 / t;
                (tenth > self.tenth.load(Ordering::Relaxed) && done < t).then(|| {
                    self.tenth.store(tenth, Ordering::Relaxed);
                    format!("downloading {file}: {}%", done * 100 / t)
                })
            }
            Fetch::Downloaded { file, bytes } => {
                big(Some(bytes)).then(|| format!("downloaded {file} ({})", megabytes(bytes)))
            }
            Fetch::Retry { file, done, error } => Some(format!(
                "the download of {file} broke off after {} ({error}); resuming",
                megabytes(done)
            )),
            Fetch::Cached { file, bytes } => {
                big(Some(bytes)).then(|| format!("{file} from the cache ({})", megabytes(bytes)))
            }
        }
    }
}

/// Download progress on stderr, for the command line: [`ProgressLines`]' lines, and on a terminal
/// a bar that redraws itself (at most every 200 ms) between them.
#[cfg(not(target_arch = "wasm32"))]
pub fn stderr() -> Observer {
    use std::io::IsTerminal;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    let lines = ProgressLines::new();
    let tty = std::io::stderr().is_terminal();
    let last_bar: Mutex<Option<Instant>> = Mutex::new(None);
    Box::new(move |step| {
        if let (true, Fetch::Progress { file, done, total }) = (tty, step) {
            let Ok(mut last) = last_bar.lock() else {
                return;
            };
            if last.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                let pct = total.filter(|&t| t > 0).map_or(0, |t| done * 100 / t);
                let width = 30usize;
                let filled = (pct as usize * width / 100).min(width);
                eprint!(
                    "\r  [{}{}] {pct:>3}% {} {file}",
                    "#".repeat(filled),
                    "-".repeat(width - filled),
                    megabytes(done)
                );
                *last = Some(Instant::now());
            }
            return;
        }
        if let Some(line) = lines.line(step) {
            // A bar drawn since the last line ends first.
            if tty && last_bar.lock().is_ok_and(|mut l| l.take().is_some()) {
                eprintln!();
            }
            eprintln!("{line}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_is_worded_at_its_start_each_tenth_and_its_end() {
        let lines = ProgressLines::new();
        let file = "unet/diffusion_pytorch_model.safetensors";
        let total = Some(10_000_000);
        let mut seen = Vec::new();
        seen.extend(lines.line(Fetch::Download {
            file,
            total,
            from: 0,
        }));
        for done in (0..=10_000_000).step_by(250_000) {
            seen.extend(lines.line(Fetch::Progress { file, done, total }));
        }
        seen.extend(lines.line(Fetch::Downloaded {
            file,
            bytes: 10_000_000,
        }));
        assert_eq!(seen.len(), 1 + 9 + 1, "{seen:?}");
        assert_eq!(seen[0], format!("downloading {file} (10.0 MB)"));
        assert_eq!(seen[1], format!("downloading {file}: 10%"));
        assert_eq!(seen[9], format!("downloading {file}: 90%"));
        assert_eq!(seen[10], format!("downloaded {file} (10.0 MB)"));
    }

    #[test]
    fn resumes_retries_and_cache_hits_have_their_lines_and_small_files_none() {
        let lines = ProgressLines::new();
        let f = "text_encoder/model.safetensors";
        assert_eq!(
            lines.line(Fetch::Download {
                file: f,
                total: Some(4_000_000),
                from: 2_000_000
            }),
            Some(format!("resuming {f} (4.0 MB) at 2.0 MB"))
        );
        // Resumed at half: the next line is for 60 %, not 10 %.
        assert_eq!(
            lines.line(Fetch::Progress {
                file: f,
                done: 2_100_000,
                total: Some(4_000_000)
            }),
            None
        );
        assert_eq!(
            lines.line(Fetch::Progress {
                file: f,
                done: 2_400_000,
                total: Some(4_000_000)
            }),
            Some(format!("downloading {f}: 60%"))
        );
        assert_eq!(
            lines.line(Fetch::Retry {
                file: f,
                done: 3_000_000,
                error: "reset"
            }),
            Some(format!(
                "the download of {f} broke off after 3.0 MB (reset); resuming"
            ))
        );
        assert_eq!(
            lines.line(Fetch::Cached {
                file: f,
                bytes: 2_200_000
            }),
            Some(format!("{f} from the cache (2.2 MB)"))
        );
        for small in [
            Fetch::Download {
                file: "config.json",
                total: Some(900),
                from: 0,
            },
            Fetch::Progress {
                file: "config.json",
                done: 900,
                total: Some(900),
            },
            Fetch::Downloaded {
                file: "config.json",
                bytes: 900,
            },
            Fetch::Cached {
                file: "config.json",
                bytes: 900,
            },
        ] {
            assert_eq!(lines.line(small), None);
        }
        // A size the server did not say: worded, without one.
        assert_eq!(
            lines.line(Fetch::Download {
                file: f,
                total: None,
                from: 0
            }),
            Some(format!("downloading {f}"))
        );
    }
}
