//! The few JavaScript calls the browser's weight sources make, by name (`Reflect`), so the crate needs no
//! `web-sys` bindings for fetch, streams and the origin-private file system.

use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// `obj[key]`.
pub fn get(obj: &JsValue, key: &str) -> Result<JsValue, JsValue> {
    Reflect::get(obj, &JsValue::from_str(key))
}

/// `obj[key]`, `None` when it is `undefined` or `null`.
pub fn get_opt(obj: &JsValue, key: &str) -> Option<JsValue> {
    get(obj, key)
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// `obj.method(...args)`.
pub fn call(obj: &JsValue, method: &str, args: &[&JsValue]) -> Result<JsValue, JsValue> {
    let f: Function = get(obj, method)?.dyn_into()?;
    let list = Array::new();
    for a in args {
        list.push(a);
    }
    Reflect::apply(&f, obj, &list)
}

/// `await obj.method(...args)`.
pub async fn call_async(
    obj: &JsValue,
    method: &str,
    args: &[&JsValue],
) -> Result<JsValue, JsValue> {
    JsFuture::from(Promise::resolve(&call(obj, method, args)?)).await
}

/// `{key: value, …}`.
pub fn object(entries: &[(&str, JsValue)]) -> JsValue {
    let obj = Object::new();
    for (k, v) in entries {
        let _ = Reflect::set(&obj, &JsValue::from_str(k), v);
    }
    obj.into()
}

/// A thrown value as a line: `Name: message` for errors and DOMExceptions.
pub fn describe(e: &JsValue) -> String {
    let text = |k| get_opt(e, k).and_then(|v| v.as_string());
    match (text("name"), text("message")) {
        (Some(name), Some(message)) => format!("{name}: {message}"),
        (None, Some(message)) => message,
        _ => e.as_string().unwrap_or_else(|| format!("{e:?}")),
    }
}

/// The error's `name` (`QuotaExceededError`, `NotFoundError`, …).
pub fn error_name(e: &JsValue) -> Option<String> {
    get_opt(e, "name").and_then(|v| v.as_string())
}

/// `setTimeout` as a future.
pub async fn sleep(ms: u32) {
    let promise = Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        let _ = call(&global, "setTimeout", &[&resolve, &JsValue::from(ms)]);
    });
    let _ = JsFuture::from(promise).await;
}
