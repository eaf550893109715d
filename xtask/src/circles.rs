//! Import circles between the files of a crate: file A naming something of file B (`use
//! crate::…`, `super::…`, `crate::a::b::f(…)`) while B, directly or through others, names
//! something of A. A parent module and its children are left out (a `mod.rs` declares and
//! re-exports its children, which use what it defines). The test below holds the engine's and
//! the server's crates to none.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module path (`["weights", "store"]`); the crate root is `[]`.
type Module = Vec<String>;

/// Every `.rs` file under `src` as its module path, with its code (comments dropped).
fn modules(src: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // Code only: comments name modules without using them; unit tests may use anything.
            let code: String = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or("")
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(module, code);
        }
    }
    out
}

/// The paths a file names: `crate::a::b…` and `super::a…`, and the items of `use …::{a, b}`.
fn named_paths(module: &Module, code: &str) -> Vec<Module> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for root in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(root) {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + root.len()..];
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let base: Module = if root == "crate::" {
                Vec::new()
            } else {
                module[..module.len().saturating_sub(1)].to_vec()
            };
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let mut path = base.clone();
                    path.extend(
                        item.trim()
                            .split("::")
                            .map(|s| s.trim().to_owned())
                            .take_while(|s| !s.is_empty() && s.chars().all(is_ident)),
                    );
                    out.push(path);
                }
            } else {
                let mut path = base;
                let mut tail = rest;
                loop {
                    let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
                    if end == 0 {
                        break;
                    }
                    path.push(tail[..end].to_owned());
                    match tail[end..].strip_prefix("::") {
                        Some(next) if next.starts_with(is_ident) => tail = next,
                        _ => break,
                    }
                }
                out.push(path);
            }
        }
    }
    out
}

/// The circles among `src`'s files, each as the modules in it.
pub fn circles(src: &Path) -> Vec<Vec<String>> {
    let files = modules(src);
    let resolve = |path: &Module| -> Option<Module> {
        (0..=path.len())
            .rev()
            .map(|k| path[..k].to_vec())
            .find(|m| files.contains_key(m))
    };
    let related = |a: &Module, b: &Module| a.starts_with(b) || b.starts_with(a);
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in &files {
        let targets = named_paths(module, code)
            .iter()
            .filter_map(resolve)
            .filter(|t| !related(module, t))
            .collect();
        graph.insert(module.clone(), targets);
    }
    // A circle is a strongly connected set of more than one file (Tarjan).
    struct Walk<'g> {
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, (usize, usize)>,
        stack: Vec<&'g Module>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g Module) {
            self.index.insert(v, (self.next, self.next));
            self.next += 1;
            self.stack.push(v);
            for w in &self.graph[v] {
                match self.index.get(w) {
                    None => {
                        self.visit(w);
                        let low = self.index[w].1.min(self.index[v].1);
                        self.index.get_mut(v).expect("visited").1 = low;
                    }
                    Some(&(i, _)) if self.stack.contains(&w) => {
                        let low = i.min(self.index[v].1);
                        self.index.get_mut(v).expect("visited").1 = low;
                    }
                    Some(_) => {}
                }
            }
            if self.index[v].0 == self.index[v].1 {
                let at = self.stack.iter().rposition(|m| *m == v).expect("on stack");
                let part: Vec<&Module> = self.stack.split_off(at);
                if part.len() > 1 {
                    self.found
                        .push(part.iter().map(|m| format!("{}.rs", m.join("/"))).collect());
                }
            }
        }
    }
    let mut walk = Walk {
        graph: &graph,
        index: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_and_the_server_have_no_import_circles() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for krate in ["crates/diffusion/src", "crates/server/src"] {
            let found = circles(&root.join(krate));
            assert!(found.is_empty(), "import circles in {krate}: {found:?}");
        }
    }

    #[test]
    fn a_circle_between_two_files_is_found() {
        let dir = std::env::temp_dir().join(format!("xtask-circles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
        std::fs::write(dir.join("a/mod.rs"), "pub mod x;\nuse crate::b::B;\n").unwrap();
        std::fs::write(
            dir.join("a/x.rs"),
            "use super::A; // a parent: not a circle\nuse crate::b::f;\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("b.rs"),
            "// crate::c in a comment is no use\nfn f() { crate::a::x::g(); }\n",
        )
        .unwrap();
        let found = circles(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.len(), 1, "{found:?}");
        let mut files = found[0].clone();
        files.sort();
        assert_eq!(files, ["a/x.rs", "b.rs"]);
    }
}
