//! `main`: three Redis GETs through the host (`some_key1`..`some_key3`), answered joined,
//! as in the original benchmark. A failed host call is the guest's error.
use guest::{host_call, register, HandlerResult};

#[no_mangle]
pub extern "C" fn wapc_init() {
    register("main", redis3);
}

fn redis3(_payload: &[u8]) -> HandlerResult {
    let mut out = Vec::new();
    for key in ["some_key1", "some_key2", "some_key3"] {
        out.extend_from_slice(&host_call("", "redis", "GET", key.as_bytes())?);
    }
    Ok(out)
}
