//! A minimal waPC guest SDK for Assemblex, with no dependencies.
//!
//! ```ignore
//! use guest::{register, HandlerResult};
//!
//! #[no_mangle]
//! pub extern "C" fn wapc_init() {
//!     register("main", hello);
//! }
//!
//! fn hello(payload: &[u8]) -> HandlerResult {
//!     Ok(payload.to_vec())
//! }
//! ```
//!
//! The host calls `wapc_init` once after instantiation; the SDK exports `__guest_call`, which
//! dispatches to the handler registered for the operation. A handler's `Err(text)` reaches the
//! host through `__guest_error`; an operation with no handler is the error
//! `unknown operation: <op>`; a panic reports its message through `__guest_error`, then traps.

use std::cell::RefCell;

/// What a handler returns: the response bytes, or an error text for the host.
pub type HandlerResult = Result<Vec<u8>, String>;

/// A handler gets the request payload.
pub type Handler = fn(&[u8]) -> HandlerResult;

#[link(wasm_import_module = "wapc")]
extern "C" {
    fn __guest_request(op_ptr: *mut u8, ptr: *mut u8);
    fn __guest_response(ptr: *const u8, len: usize);
    fn __guest_error(ptr: *const u8, len: usize);
    fn __host_call(
        bd_ptr: *const u8,
        bd_len: usize,
        ns_ptr: *const u8,
        ns_len: usize,
        op_ptr: *const u8,
        op_len: usize,
        ptr: *const u8,
        len: usize,
    ) -> usize;
    fn __host_response_len() -> usize;
    fn __host_response(ptr: *mut u8);
    fn __host_error_len() -> usize;
    fn __host_error(ptr: *mut u8);
    fn __console_log(ptr: *const u8, len: usize);
}

struct Registry(RefCell<Vec<(String, Handler)>>);

// wasm32-unknown-unknown has one thread: the registry is never shared across threads.
unsafe impl Sync for Registry {}

static HANDLERS: Registry = Registry(RefCell::new(Vec::new()));

/// Registers `handler` for operation `op` (a later registration of the same name replaces it).
/// The first registration also installs a panic hook that reports the panic message through
/// `__guest_error` before the module traps (guests build with `panic = "abort"`).
pub fn register(op: &str, handler: Handler) {
    install_panic_hook();
    let mut handlers = HANDLERS.0.borrow_mut();
    match handlers.iter_mut().find(|(name, _)| name == op) {
        Some(entry) => entry.1 = handler,
        None => handlers.push((op.to_string(), handler)),
    }
}

fn lookup(op: &[u8]) -> Option<Handler> {
    let handlers = HANDLERS.0.borrow();
    handlers
        .iter()
        .find(|(name, _)| name.as_bytes() == op)
        .map(|(_, handler)| *handler)
}

/// Calls the host: `namespace`/`operation` on `binding` with `payload`. Returns the host's
/// response, or its error text.
pub fn host_call(binding: &str, namespace: &str, operation: &str, payload: &[u8]) -> HandlerResult {
    let ok = unsafe {
        __host_call(
            binding.as_ptr(),
            binding.len(),
            namespace.as_ptr(),
            namespace.len(),
            operation.as_ptr(),
            operation.len(),
            payload.as_ptr(),
            payload.len(),
        )
    };
    if ok == 1 {
        let len = unsafe { __host_response_len() };
        let mut buf = vec![0u8; len];
        unsafe { __host_response(buf.as_mut_ptr()) };
        Ok(buf)
    } else {
        let len = unsafe { __host_error_len() };
        let mut buf = vec![0u8; len];
        unsafe { __host_error(buf.as_mut_ptr()) };
        Err(String::from_utf8_lossy(&buf).into_owned())
    }
}

// The `actor` namespace (binding ""): the state, key and alarm of the actor being called.
// Outside an actor call every one of them fails with the host's error text.

/// The key of the actor being called.
pub fn actor_key() -> Result<String, String> {
    let key = host_call("", "actor", "key", b"")?;
    Ok(String::from_utf8_lossy(&key).into_owned())
}

/// The actor's stored state (empty if it has none).
pub fn actor_load() -> HandlerResult {
    host_call("", "actor", "load", b"")
}

/// Replaces the actor's stored state; returns once the host has made it durable.
pub fn actor_store(state: &[u8]) -> Result<(), String> {
    host_call("", "actor", "store", state).map(|_| ())
}

/// Schedules one call of the actor's operation `alarm` (empty payload) in `ms` milliseconds,
/// replacing any pending alarm.
pub fn actor_alarm(ms: u64) -> Result<(), String> {
    host_call("", "actor", "alarm", ms.to_string().as_bytes()).map(|_| ())
}

/// Drops the actor's pending alarm.
pub fn actor_cancel() -> Result<(), String> {
    host_call("", "actor", "cancel", b"").map(|_| ())
}

/// Sends one log line to the host.
pub fn console_log(message: &str) {
    unsafe { __console_log(message.as_ptr(), message.len()) }
}

fn send_error(text: &[u8]) {
    unsafe { __guest_error(text.as_ptr(), text.len()) }
}

fn install_panic_hook() {
    static mut INSTALLED: bool = false;
    // Single-threaded: no race on the flag.
    unsafe {
        if INSTALLED {
            return;
        }
        INSTALLED = true;
    }
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string();
        send_error(text.as_bytes());
    }));
}

/// The waPC entry point: reads the request, runs the handler, sends the response or the error.
#[no_mangle]
pub extern "C" fn __guest_call(op_len: usize, msg_len: usize) -> usize {
    let mut op = vec![0u8; op_len];
    let mut payload = vec![0u8; msg_len];
    unsafe { __guest_request(op.as_mut_ptr(), payload.as_mut_ptr()) };
    let handler = match lookup(&op) {
        Some(handler) => handler,
        None => {
            let mut text = b"unknown operation: ".to_vec();
            text.extend_from_slice(&op);
            send_error(&text);
            return 0;
        }
    };
    match handler(&payload) {
        Ok(response) => {
            unsafe { __guest_response(response.as_ptr(), response.len()) };
            1
        }
        Err(text) => {
            send_error(text.as_bytes());
            0
        }
    }
}
