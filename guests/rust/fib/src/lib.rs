//! `main`: payload ASCII decimal n; answers fib(n), computed the slow recursive way.
use guest::{register, HandlerResult};

#[no_mangle]
pub extern "C" fn wapc_init() {
    register("main", fib_handler);
}

fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1).wrapping_add(fib(n - 2))
    }
}

fn fib_handler(payload: &[u8]) -> HandlerResult {
    let text = core::str::from_utf8(payload).map_err(|_| String::from("invalid number"))?;
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid number: {}", text))?;
    Ok(fib(n).to_string().into_bytes())
}
