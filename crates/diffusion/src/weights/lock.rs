//! The model cache's site-wide lock ([Web Locks]): one tab or worker of a site at a time loads a
//! model through the cache, the others wait their turn instead of failing.
//!
//! The cache's files are opened with `createSyncAccessHandle`, which is exclusive across the
//! whole origin: a second tab that loads the same model while the first one reads it would be
//! refused (`NoModificationAllowedError`). With the lock, it waits until the first has loaded
//! its model (the files are cached by then, so it reads them with no download), and
//! `localModelCache.clear()` (`local.js`) takes the same lock. The lock is released when its
//! [`CacheLock`] is dropped, or by the browser when the tab or worker holding it goes away.
//!
//! [Web Locks]: https://developer.mozilla.org/docs/Web/API/Web_Locks_API

use js_sys::{Array, Function, Promise, Reflect};
use wasm_bindgen::JsValue;
use wasm_bindgen::closure::Closure;
use wasm_bindgen_futures::JsFuture;

use super::js::{call, describe, get, get_opt, object};

/// The lock's name, shared with `local.js` (`localModelCache.clear()`).
pub const NAME: &str = "fresco-model-cache";

/// How often a wait for the lock looks at whether its call was cancelled, in milliseconds.
const POLL_MS: i32 = 200;

/// The held lock: released on drop.
pub struct CacheLock {
    /// Resolves the promise the lock's callback returned; the browser releases the lock then.
    release: Function,
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        let _ = self.release.call0(&JsValue::NULL);
    }
}

/// Why [`acquire`] returned without the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockError {
    /// `cancelled` said so while the call waited.
    Cancelled,
    /// The browser refused the request (the message says why).
    Failed(String),
}

/// Takes the model cache's lock, waiting for the tab or worker that holds it (after calling
/// `waiting`, once) until it is released or `cancelled` returns true; `Ok(None)` where the
/// browser has no Web Locks (then nothing is serialised).
pub async fn acquire(
    waiting: &dyn Fn(),
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<CacheLock>, LockError> {
    let Some(locks) = get_opt(&js_sys::global(), "navigator").and_then(|n| get_opt(&n, "locks"))
    else {
        return Ok(None);
    };
    if let Some(held) = request(&locks, None, cancelled).await? {
        return Ok(Some(held));
    }
    waiting();
    let controller = Reflect::construct(
        &get(&js_sys::global(), "AbortController")
            .map_err(|e| LockError::Failed(describe(&e)))?
            .into(),
        &Array::new(),
    )
    .map_err(|e| LockError::Failed(describe(&e)))?;
    request(&locks, Some(&controller), cancelled).await
}

/// `locks.request(NAME, options, callback)`. Without an abort controller, `{ifAvailable: true}`:
/// the callback gets `null` at once when another holds the lock (`Ok(None)`); with one, the
/// request waits in the browser's queue, and is withdrawn through the controller when
/// `cancelled` says so. The callback keeps the lock until [`CacheLock`] resolves the promise it
/// returned.
async fn request(
    locks: &JsValue,
    abort: Option<&JsValue>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<CacheLock>, LockError> {
    let failed = |e: &JsValue| LockError::Failed(describe(e));
    let mut release = None;
    let held = Promise::new(&mut |resolve, _| release = Some(resolve));
    let mut grant = None;
    let granted = Promise::new(&mut |resolve, _| grant = Some(resolve));
    let (Some(release), Some(grant)) = (release, grant) else {
        return Err(LockError::Failed("a Promise executor did not run".into()));
    };
    let callback = Closure::once_into_js(move |lock: JsValue| -> JsValue {
        let got = !lock.is_null() && !lock.is_undefined();
        let _ = grant.call1(&JsValue::NULL, &JsValue::from_bool(got));
        if got { held.into() } else { JsValue::UNDEFINED }
    });
    // The spec forbids `signal` beside `ifAvailable`.
    let options = match abort {
        None => object(&[("ifAvailable", JsValue::TRUE)]),
        Some(controller) => {
            object(&[("signal", get(controller, "signal").map_err(|e| failed(&e))?)])
        }
    };
    // The request's own promise settles when the lock is released (or at once, `undefined`,
    // when `ifAvailable` found it taken); it rejects when the request is refused or withdrawn.
    let settled = call(
        locks,
        "request",
        &[&JsValue::from_str(NAME), &options, &callback],
    )
    .map_err(|e| failed(&e))?;
    let outcome = Promise::race(&Array::of2(&granted, &settled));
    loop {
        let tick = Promise::new(&mut |resolve, _| {
            let _ = call(
                &js_sys::global(),
                "setTimeout",
                &[
                    &resolve,
                    &JsValue::from(POLL_MS),
                    &JsValue::from_str("tick"),
                ],
            );
        });
        let next = JsFuture::from(Promise::race(&Array::of2(&outcome, &tick)))
            .await
            .map_err(|e| failed(&e))?;
        if next.as_string().as_deref() == Some("tick") {
            if let Some(controller) = abort
                && cancelled()
            {
                let _ = call(controller, "abort", &[]);
                return Err(LockError::Cancelled);
            }
            continue;
        }
        return Ok((next.as_bool() == Some(true)).then(|| CacheLock { release }));
    }
}
