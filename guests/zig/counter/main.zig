//! counter: a counter actor through the host's actor namespace. increment (and alarm, which
//! an alarm calls) adds one to the stored count and to a count kept in memory, answering
//! "<stored> <memory>"; get answers the same without changing anything; key answers the
//! actor's key; set_alarm (payload = ASCII milliseconds) and cancel_alarm answer "ok".
const std = @import("std");
const guest = @import("guest");

pub const panic = std.debug.FullPanic(guest.panic);

/// Increments made by this instance: lives as long as the instance does.
var memory: u64 = 0;

export fn wapc_init() void {
    guest.register("increment", increment);
    guest.register("alarm", increment);
    guest.register("get", get);
    guest.register("key", key);
    guest.register("set_alarm", setAlarm);
    guest.register("cancel_alarm", cancelAlarm);
}

/// The stored count: ASCII decimal, empty = 0.
fn stored(call: *guest.Call) !u64 {
    const state = try call.actorLoad();
    if (state.len == 0) return 0;
    return std.fmt.parseInt(u64, state, 10) catch return call.fail("invalid state: {s}", .{state});
}

fn answer(call: *guest.Call, count: u64) ![]const u8 {
    return std.fmt.allocPrint(call.allocator, "{d} {d}", .{ count, memory });
}

fn increment(call: *guest.Call) anyerror![]const u8 {
    const n = try stored(call) + 1;
    try call.actorStore(try std.fmt.allocPrint(call.allocator, "{d}", .{n}));
    memory += 1;
    return answer(call, n);
}

fn get(call: *guest.Call) anyerror![]const u8 {
    return answer(call, try stored(call));
}

fn key(call: *guest.Call) anyerror![]const u8 {
    return call.actorKey();
}

fn setAlarm(call: *guest.Call) anyerror![]const u8 {
    const ms = std.fmt.parseInt(u64, call.payload, 10) catch
        return call.fail("invalid number of milliseconds: {s}", .{call.payload});
    try call.actorAlarm(ms);
    return "ok";
}

fn cancelAlarm(call: *guest.Call) anyerror![]const u8 {
    try call.actorCancel();
    return "ok";
}
