// Package guest is a minimal waPC guest SDK for Assemblex, for the standard Go toolchain
// (GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared, a reactor). It needs no third-party module.
//
// A guest registers a handler per operation, usually in an init function (the host runs it
// through the reactor's _initialize export):
//
//	func init() { guest.Register("main", hello) }
//
//	func hello(payload []byte) ([]byte, error) { return payload, nil }
//
//	func main() {}
//
// The package exports __guest_call, which dispatches to the handler registered for the
// operation. A handler's error reaches the host through __guest_error; an operation with no
// handler is the error "unknown operation: <op>"; a handler's panic is recovered and reported
// as the error "panic: <value>".
package guest

import (
	"errors"
	"runtime"
	"strconv"
	"unsafe"
)

// Handler answers one operation: the request payload in, the response out.
type Handler func(payload []byte) ([]byte, error)

var handlers = map[string]Handler{}

// Register sets the handler for operation op (a later registration replaces an earlier one).
func Register(op string, h Handler) {
	handlers[op] = h
}

//go:wasmimport wapc __guest_request
func guestRequest(opPtr, ptr uint32)

//go:wasmimport wapc __guest_response
func guestResponse(ptr, len uint32)

//go:wasmimport wapc __guest_error
func guestError(ptr, len uint32)

//go:wasmimport wapc __host_call
func hostCall(bdPtr, bdLen, nsPtr, nsLen, opPtr, opLen, ptr, len uint32) uint32

//go:wasmimport wapc __host_response_len
func hostResponseLen() uint32

//go:wasmimport wapc __host_response
func hostResponse(ptr uint32)

//go:wasmimport wapc __host_error_len
func hostErrorLen() uint32

//go:wasmimport wapc __host_error
func hostError(ptr uint32)

//go:wasmimport wapc __console_log
func consoleLog(ptr, len uint32)

// bytesPtr is the linear-memory address of b's first byte (0 for an empty slice). The caller
// keeps b alive across the import call (runtime.KeepAlive).
func bytesPtr(b []byte) uint32 {
	if len(b) == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(&b[0])))
}

func stringPtr(s string) uint32 {
	if len(s) == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(unsafe.StringData(s))))
}

// HostCall calls the host: namespace/operation on binding with payload. It returns the host's
// response, or an error carrying the host's error text.
func HostCall(binding, namespace, operation string, payload []byte) ([]byte, error) {
	ok := hostCall(
		stringPtr(binding), uint32(len(binding)),
		stringPtr(namespace), uint32(len(namespace)),
		stringPtr(operation), uint32(len(operation)),
		bytesPtr(payload), uint32(len(payload)),
	)
	runtime.KeepAlive(binding)
	runtime.KeepAlive(namespace)
	runtime.KeepAlive(operation)
	runtime.KeepAlive(payload)
	if ok == 1 {
		buf := make([]byte, hostResponseLen())
		hostResponse(bytesPtr(buf))
		runtime.KeepAlive(buf)
		return buf, nil
	}
	buf := make([]byte, hostErrorLen())
	hostError(bytesPtr(buf))
	runtime.KeepAlive(buf)
	return nil, errors.New(string(buf))
}

// The actor namespace (binding ""): the state, key and alarm of the actor being called.
// Outside an actor call each of these fails with the host's error text.

// ActorKey returns the key of the actor being called.
func ActorKey() (string, error) {
	key, err := HostCall("", "actor", "key", nil)
	return string(key), err
}

// ActorLoad returns the actor's stored state (empty if it has none).
func ActorLoad() ([]byte, error) {
	return HostCall("", "actor", "load", nil)
}

// ActorStore replaces the actor's stored state; it returns once the host has made it durable.
func ActorStore(state []byte) error {
	_, err := HostCall("", "actor", "store", state)
	return err
}

// ActorAlarm schedules one call of the actor's operation "alarm" (empty payload) in ms
// milliseconds, replacing any pending alarm.
func ActorAlarm(ms uint64) error {
	_, err := HostCall("", "actor", "alarm", strconv.AppendUint(nil, ms, 10))
	return err
}

// ActorCancel drops the actor's pending alarm.
func ActorCancel() error {
	_, err := HostCall("", "actor", "cancel", nil)
	return err
}

// ConsoleLog sends one log line to the host.
func ConsoleLog(message string) {
	consoleLog(stringPtr(message), uint32(len(message)))
	runtime.KeepAlive(message)
}

func panicText(r any) string {
	switch v := r.(type) {
	case error:
		return v.Error()
	case string:
		return v
	case interface{ String() string }:
		return v.String()
	}
	return "(unprintable panic value)"
}

func sendError(text string) {
	guestError(stringPtr(text), uint32(len(text)))
	runtime.KeepAlive(text)
}

//go:wasmexport __guest_call
func guestCall(opLen, msgLen uint32) (ok uint32) {
	// A panicking handler becomes a guest error; the instance stays usable.
	defer func() {
		if r := recover(); r != nil {
			sendError("panic: " + panicText(r))
			ok = 0
		}
	}()
	op := make([]byte, opLen)
	payload := make([]byte, msgLen)
	guestRequest(bytesPtr(op), bytesPtr(payload))
	runtime.KeepAlive(op)
	runtime.KeepAlive(payload)
	h, found := handlers[string(op)]
	if !found {
		sendError("unknown operation: " + string(op))
		return 0
	}
	response, err := h(payload)
	if err != nil {
		sendError(err.Error())
		return 0
	}
	guestResponse(bytesPtr(response), uint32(len(response)))
	runtime.KeepAlive(response)
	return 1
}
