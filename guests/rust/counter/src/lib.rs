//! A counter actor through the host's `actor` namespace: `increment` (and `alarm`, which an
//! alarm calls) adds one to the stored count and to a count kept in memory, answering
//! `<stored> <memory>`; `get` answers the same without changing anything; `key` answers the
//! actor's key; `set_alarm` (payload = ASCII milliseconds) and `cancel_alarm` answer `ok`.
use std::sync::atomic::{AtomicU64, Ordering};

use guest::{
    actor_alarm, actor_cancel, actor_key, actor_load, actor_store, register, HandlerResult,
};

/// Increments made by this instance: lives as long as the instance does.
static MEMORY: AtomicU64 = AtomicU64::new(0);

#[no_mangle]
pub extern "C" fn wapc_init() {
    register("increment", increment);
    register("alarm", increment);
    register("get", get);
    register("key", key);
    register("set_alarm", set_alarm);
    register("cancel_alarm", cancel_alarm);
}

/// The stored count: ASCII decimal, empty = 0.
fn stored() -> Result<u64, String> {
    let state = actor_load()?;
    if state.is_empty() {
        return Ok(0);
    }
    core::str::from_utf8(&state)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("invalid state: {}", String::from_utf8_lossy(&state)))
}

fn answer(stored: u64) -> HandlerResult {
    Ok(format!("{} {}", stored, MEMORY.load(Ordering::Relaxed)).into_bytes())
}

fn increment(_payload: &[u8]) -> HandlerResult {
    let n = stored()? + 1;
    actor_store(n.to_string().as_bytes())?;
    MEMORY.fetch_add(1, Ordering::Relaxed);
    answer(n)
}

fn get(_payload: &[u8]) -> HandlerResult {
    answer(stored()?)
}

fn key(_payload: &[u8]) -> HandlerResult {
    Ok(actor_key()?.into_bytes())
}

fn set_alarm(payload: &[u8]) -> HandlerResult {
    let ms = core::str::from_utf8(payload)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            format!(
                "invalid number of milliseconds: {}",
                String::from_utf8_lossy(payload)
            )
        })?;
    actor_alarm(ms)?;
    Ok(b"ok".to_vec())
}

fn cancel_alarm(_payload: &[u8]) -> HandlerResult {
    actor_cancel()?;
    Ok(b"ok".to_vec())
}
