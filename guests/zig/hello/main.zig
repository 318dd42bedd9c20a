//! hello: operation main answers "Hello, <payload>!" ("Hello, World!" for an empty payload);
//! operation log sends the payload to the host's log (consoleLog) and answers "logged".
const std = @import("std");
const guest = @import("guest");

pub const panic = std.debug.FullPanic(guest.panic);

export fn wapc_init() void {
    guest.register("main", hello);
    guest.register("log", log);
}

fn hello(call: *guest.Call) anyerror![]const u8 {
    const name = if (call.payload.len == 0) "World" else call.payload;
    return std.mem.concat(call.allocator, u8, &.{ "Hello, ", name, "!" });
}

fn log(call: *guest.Call) anyerror![]const u8 {
    guest.consoleLog(call.payload);
    return "logged";
}
