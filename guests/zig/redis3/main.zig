//! redis3: operation main GETs some_key1..some_key3 through the host's redis namespace and
//! answers the three values joined, as in the original benchmark. A failed host call is the
//! guest's error (with the host's text).
const std = @import("std");
const guest = @import("guest");

pub const panic = std.debug.FullPanic(guest.panic);

export fn wapc_init() void {
    guest.register("main", redis3);
}

fn redis3(call: *guest.Call) anyerror![]const u8 {
    const v1 = try call.hostCall("", "redis", "GET", "some_key1");
    const v2 = try call.hostCall("", "redis", "GET", "some_key2");
    const v3 = try call.hostCall("", "redis", "GET", "some_key3");
    return std.mem.concat(call.allocator, u8, &.{ v1, v2, v3 });
}
