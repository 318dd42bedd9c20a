//! `main`: answers `Hello, <payload>!` (`Hello, World!` for an empty payload).
//! `log`: sends the payload to the host's log (console_log) and answers `logged`.
use guest::{console_log, register, HandlerResult};

#[no_mangle]
pub extern "C" fn wapc_init() {
    register("main", hello);
    register("log", log);
}

fn hello(payload: &[u8]) -> HandlerResult {
    let name: &[u8] = if payload.is_empty() {
        b"World"
    } else {
        payload
    };
    let mut out = Vec::with_capacity(name.len() + 8);
    out.extend_from_slice(b"Hello, ");
    out.extend_from_slice(name);
    out.push(b'!');
    Ok(out)
}

fn log(payload: &[u8]) -> HandlerResult {
    console_log(&String::from_utf8_lossy(payload));
    Ok(b"logged".to_vec())
}
