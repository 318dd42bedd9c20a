//! kv: the replicated KV store through the host's kv namespace (binding = key).
//! incr (payload = key) answers the new count, get (payload = key) answers the value,
//! set (payload = key=value) answers "ok".
const std = @import("std");
const guest = @import("guest");

pub const panic = std.debug.FullPanic(guest.panic);

export fn wapc_init() void {
    guest.register("incr", incr);
    guest.register("get", get);
    guest.register("set", set);
}

fn incr(call: *guest.Call) anyerror![]const u8 {
    return call.hostCall(call.payload, "kv", "incr", "1");
}

fn get(call: *guest.Call) anyerror![]const u8 {
    return call.hostCall(call.payload, "kv", "get", "");
}

fn set(call: *guest.Call) anyerror![]const u8 {
    const eq = std.mem.indexOfScalar(u8, call.payload, '=') orelse
        return call.fail("set expects key=value", .{});
    _ = try call.hostCall(call.payload[0..eq], "kv", "set", call.payload[eq + 1 ..]);
    return "ok";
}
