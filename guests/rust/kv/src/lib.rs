//! The replicated KV store through the host's `kv` namespace (binding = key):
//! `incr` (payload = key) answers the new count, `get` (payload = key) answers the value,
//! `set` (payload = `key=value`) answers `ok`.
use guest::{host_call, register, HandlerResult};

#[no_mangle]
pub extern "C" fn wapc_init() {
    register("incr", incr);
    register("get", get);
    register("set", set);
}

fn key_of(bytes: &[u8]) -> Result<&str, String> {
    core::str::from_utf8(bytes).map_err(|_| String::from("key is not UTF-8"))
}

fn incr(payload: &[u8]) -> HandlerResult {
    host_call(key_of(payload)?, "kv", "incr", b"1")
}

fn get(payload: &[u8]) -> HandlerResult {
    host_call(key_of(payload)?, "kv", "get", b"")
}

fn set(payload: &[u8]) -> HandlerResult {
    let eq = payload
        .iter()
        .position(|&b| b == b'=')
        .ok_or_else(|| String::from("set expects key=value"))?;
    host_call(key_of(&payload[..eq])?, "kv", "set", &payload[eq + 1..])?;
    Ok(b"ok".to_vec())
}
