//! fib: operation main, payload ASCII decimal n, answers fib(n) computed the slow recursive way.
const std = @import("std");
const guest = @import("guest");

pub const panic = std.debug.FullPanic(guest.panic);

export fn wapc_init() void {
    guest.register("main", fibHandler);
}

fn fib(n: u64) u64 {
    return if (n < 2) n else fib(n - 1) +% fib(n - 2);
}

fn fibHandler(call: *guest.Call) anyerror![]const u8 {
    const text = std.mem.trim(u8, call.payload, " \t\r\n");
    const n = std.fmt.parseInt(u64, text, 10) catch
        return call.fail("invalid number: {s}", .{call.payload});
    return std.fmt.allocPrint(call.allocator, "{d}", .{fib(n)});
}
