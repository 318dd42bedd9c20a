//! A minimal waPC guest SDK for Assemblex, in Zig (std only), for wasm32-freestanding.
//!
//!     const guest = @import("guest");
//!
//!     export fn wapc_init() void {
//!         guest.register("main", hello);
//!     }
//!
//!     fn hello(call: *guest.Call) anyerror![]const u8 {
//!         return call.payload;
//!     }
//!
//! The host calls `wapc_init` once after instantiation; this module exports `__guest_call`,
//! which dispatches to the handler registered for the operation. Each call gets an arena
//! (`call.allocator`) that is reset when the call ends. A handler that returns an error sends
//! the text set by `call.fail(...)` or by a failed `call.hostCall(...)` (the host's error text)
//! through `__guest_error`, or else the error's name; an operation with no handler is the error
//! `unknown operation: <op>`.
const std = @import("std");

extern "wapc" fn __guest_request(op_ptr: [*]u8, ptr: [*]u8) void;
extern "wapc" fn __guest_response(ptr: [*]const u8, len: usize) void;
extern "wapc" fn __guest_error(ptr: [*]const u8, len: usize) void;
extern "wapc" fn __host_call(
    bd_ptr: [*]const u8,
    bd_len: usize,
    ns_ptr: [*]const u8,
    ns_len: usize,
    op_ptr: [*]const u8,
    op_len: usize,
    ptr: [*]const u8,
    len: usize,
) u32;
extern "wapc" fn __host_response_len() usize;
extern "wapc" fn __host_response(ptr: [*]u8) void;
extern "wapc" fn __host_error_len() usize;
extern "wapc" fn __host_error(ptr: [*]u8) void;
extern "wapc" fn __console_log(ptr: [*]const u8, len: usize) void;

/// The address to hand the host for `bytes`. An empty slice from an allocator points at
/// maxInt(usize), outside linear memory, and a host that bounds-checks every pointer (even for
/// zero bytes, as wasm's own memory.copy does) traps on it: give it an address inside memory.
var empty: [1]u8 = undefined;
fn addr(bytes: []const u8) [*]const u8 {
    return if (bytes.len == 0) &empty else bytes.ptr;
}
fn addrMut(bytes: []u8) [*]u8 {
    return if (bytes.len == 0) &empty else bytes.ptr;
}

/// One guest call: its payload, an arena for the call, and the error text to report.
pub const Call = struct {
    payload: []const u8,
    allocator: std.mem.Allocator,
    error_text: ?[]const u8 = null,

    /// Sets the guest error text (formatted) and returns error.GuestError for the handler to
    /// return: `return call.fail("invalid number: {s}", .{text});`
    pub fn fail(call: *Call, comptime fmt: []const u8, args: anytype) error{GuestError} {
        call.error_text = std.fmt.allocPrint(call.allocator, fmt, args) catch "out of memory";
        return error.GuestError;
    }

    /// Calls the host: `namespace`/`operation` on `binding` with `payload`. Returns the host's
    /// response (in the call's arena), or error.HostCallFailed with the host's error text kept
    /// as this call's error text.
    pub fn hostCall(call: *Call, binding: []const u8, namespace: []const u8, operation: []const u8, payload: []const u8) ![]u8 {
        const ok = __host_call(
            addr(binding),
            binding.len,
            addr(namespace),
            namespace.len,
            addr(operation),
            operation.len,
            addr(payload),
            payload.len,
        );
        if (ok == 1) {
            const response = try call.allocator.alloc(u8, __host_response_len());
            __host_response(addrMut(response));
            return response;
        }
        const text = try call.allocator.alloc(u8, __host_error_len());
        __host_error(addrMut(text));
        call.error_text = text;
        return error.HostCallFailed;
    }

    // The actor namespace (binding ""): the state, key and alarm of the actor being called.
    // Outside an actor call each of these fails as `hostCall` does, with the host's text.

    /// The key of the actor being called (in the call's arena).
    pub fn actorKey(call: *Call) ![]u8 {
        return call.hostCall("", "actor", "key", "");
    }

    /// The actor's stored state (in the call's arena; empty if it has none).
    pub fn actorLoad(call: *Call) ![]u8 {
        return call.hostCall("", "actor", "load", "");
    }

    /// Replaces the actor's stored state; returns once the host has made it durable.
    pub fn actorStore(call: *Call, state: []const u8) !void {
        _ = try call.hostCall("", "actor", "store", state);
    }

    /// Schedules one call of the actor's operation `alarm` (empty payload) in `ms`
    /// milliseconds, replacing any pending alarm.
    pub fn actorAlarm(call: *Call, ms: u64) !void {
        var buf: [20]u8 = undefined;
        const text = std.fmt.bufPrint(&buf, "{d}", .{ms}) catch unreachable;
        _ = try call.hostCall("", "actor", "alarm", text);
    }

    /// Drops the actor's pending alarm.
    pub fn actorCancel(call: *Call) !void {
        _ = try call.hostCall("", "actor", "cancel", "");
    }
};

/// A handler answers one operation: the response bytes, or an error.
pub const Handler = *const fn (call: *Call) anyerror![]const u8;

const max_handlers = 64;
var names: [max_handlers][]const u8 = undefined;
var handlers: [max_handlers]Handler = undefined;
var handler_count: usize = 0;

/// Registers `handler` for operation `op` (a later registration replaces an earlier one).
/// `op` must outlive the module (a string literal does).
pub fn register(op: []const u8, handler: Handler) void {
    for (names[0..handler_count], 0..) |name, i| {
        if (std.mem.eql(u8, name, op)) {
            handlers[i] = handler;
            return;
        }
    }
    if (handler_count == max_handlers) @panic("too many handlers");
    names[handler_count] = op;
    handlers[handler_count] = handler;
    handler_count += 1;
}

fn lookup(op: []const u8) ?Handler {
    for (names[0..handler_count], 0..) |name, i| {
        if (std.mem.eql(u8, name, op)) return handlers[i];
    }
    return null;
}

/// Sends one log line to the host.
pub fn consoleLog(message: []const u8) void {
    __console_log(addr(message), message.len);
}

fn sendError(text: []const u8) void {
    __guest_error(addr(text), text.len);
}

var arena = std.heap.ArenaAllocator.init(std.heap.wasm_allocator);

/// The waPC entry point.
export fn __guest_call(op_len: usize, msg_len: usize) u32 {
    // Keep up to 1 MiB of arena between calls; a bigger call gives the rest back.
    defer _ = arena.reset(.{ .retain_with_limit = 1 << 20 });
    const allocator = arena.allocator();
    const op = allocator.alloc(u8, op_len) catch return oom();
    const payload = allocator.alloc(u8, msg_len) catch return oom();
    __guest_request(addrMut(op), addrMut(payload));

    const handler = lookup(op) orelse {
        const text = std.mem.concat(allocator, u8, &.{ "unknown operation: ", op }) catch return oom();
        sendError(text);
        return 0;
    };
    var call = Call{ .payload = payload, .allocator = allocator };
    const response = handler(&call) catch |err| {
        sendError(call.error_text orelse @errorName(err));
        return 0;
    };
    __guest_response(addr(response), response.len);
    return 1;
}

fn oom() u32 {
    sendError("out of memory");
    return 0;
}

/// Reports a panic through __guest_error, then traps.
pub fn panic(message: []const u8, _: ?usize) noreturn {
    sendError(message);
    @trap();
}
