// kv: the replicated KV store through the host's kv namespace (binding = key).
// incr (payload = key) answers the new count, get (payload = key) answers the value,
// set (payload = key=value) answers "ok".
import { hostCall, register, Result } from "../guest";
export { __guest_call } from "../guest";

function incr(payload: ArrayBuffer): Result {
  return hostCall(String.UTF8.decode(payload), "kv", "incr", String.UTF8.encode("1"));
}

function get(payload: ArrayBuffer): Result {
  return hostCall(String.UTF8.decode(payload), "kv", "get", new ArrayBuffer(0));
}

function set(payload: ArrayBuffer): Result {
  const bytes = Uint8Array.wrap(payload);
  const eq = bytes.indexOf(0x3d); // '='
  if (eq < 0) return Result.err("set expects key=value");
  const key = String.UTF8.decode(payload.slice(0, eq));
  const r = hostCall(key, "kv", "set", payload.slice(eq + 1));
  if (!r.isOk) return r;
  return Result.text("ok");
}

register("incr", incr);
register("get", get);
register("set", set);
