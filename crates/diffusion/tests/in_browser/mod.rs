//! What the browser tests (`browser.rs`, `browser_worker.rs`) share.

/// Where the fixtures are served: `cargo xtask test` starts `fresco serve --www tests/fixtures`
/// and passes its URL in FRESCO_FIXTURES_URL at compile time.
pub const FIXTURES: &str = match option_env!("FRESCO_FIXTURES_URL") {
    Some(u) => u,
    None => "http://127.0.0.1:8765",
};

/// `console.log(s)`: shown by wasm-bindgen-test with `--nocapture`, or when a test fails.
pub fn web_log(s: &str) {
    let console = js_sys::Reflect::get(&js_sys::global(), &"console".into()).unwrap();
    let log = js_sys::Function::from(js_sys::Reflect::get(&console, &"log".into()).unwrap());
    let _ = log.call1(&console, &s.into());
}
