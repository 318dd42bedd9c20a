// counter: a counter actor through the host's actor namespace. increment (and alarm, which
// an alarm calls) adds one to the stored count and to a count kept in memory, answering
// "<stored> <memory>"; get answers the same without changing anything; key answers the
// actor's key; set_alarm (payload = ASCII milliseconds) and cancel_alarm answer "ok".
import { actorAlarm, actorCancel, actorKey, actorLoad, actorStore, register, Result } from "../guest";
export { __guest_call } from "../guest";

/** Increments made by this instance: lives as long as the instance does. */
let memory: u64 = 0;

/** ASCII decimal digits as a number; -1 if `text` is empty, not digits, or too long. */
function parseDecimal(text: string): i64 {
  if (text.length == 0 || text.length > 18) return -1;
  let n: i64 = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    n = n * 10 + (c - 48);
  }
  return n;
}

/** The stored count (empty = 0) in `data` as ASCII, or the error. */
function stored(): Result {
  const r = actorLoad();
  if (!r.isOk) return r;
  if (r.data.byteLength == 0) return Result.text("0");
  const text = String.UTF8.decode(r.data);
  if (parseDecimal(text) < 0) return Result.err("invalid state: " + text);
  return r;
}

function answer(count: string): Result {
  return Result.text(count + " " + memory.toString());
}

function increment(payload: ArrayBuffer): Result {
  const r = stored();
  if (!r.isOk) return r;
  const n = (parseDecimal(String.UTF8.decode(r.data)) + 1).toString();
  const s = actorStore(String.UTF8.encode(n));
  if (!s.isOk) return s;
  memory++;
  return answer(n);
}

function get(payload: ArrayBuffer): Result {
  const r = stored();
  if (!r.isOk) return r;
  return answer(parseDecimal(String.UTF8.decode(r.data)).toString());
}

function key(payload: ArrayBuffer): Result {
  return actorKey();
}

function setAlarm(payload: ArrayBuffer): Result {
  const text = String.UTF8.decode(payload);
  const ms = parseDecimal(text);
  if (ms < 0) return Result.err("invalid number of milliseconds: " + text);
  const r = actorAlarm(<u64>ms);
  if (!r.isOk) return r;
  return Result.text("ok");
}

function cancelAlarm(payload: ArrayBuffer): Result {
  const r = actorCancel();
  if (!r.isOk) return r;
  return Result.text("ok");
}

register("increment", increment);
register("alarm", increment);
register("get", get);
register("key", key);
register("set_alarm", setAlarm);
register("cancel_alarm", cancelAlarm);
