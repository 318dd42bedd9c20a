// kv: the replicated KV store through the host's kv namespace (binding = key).
// incr (payload = key) answers the new count, get (payload = key) answers the value,
// set (payload = key=value) answers "ok".
package main

import (
	"bytes"
	"errors"

	"assemblex/guests/guest"
)

func init() {
	guest.Register("incr", incr)
	guest.Register("get", get)
	guest.Register("set", set)
}

func incr(payload []byte) ([]byte, error) {
	return guest.HostCall(string(payload), "kv", "incr", []byte("1"))
}

func get(payload []byte) ([]byte, error) {
	return guest.HostCall(string(payload), "kv", "get", nil)
}

func set(payload []byte) ([]byte, error) {
	key, value, found := bytes.Cut(payload, []byte("="))
	if !found {
		return nil, errors.New("set expects key=value")
	}
	if _, err := guest.HostCall(string(key), "kv", "set", value); err != nil {
		return nil, err
	}
	return []byte("ok"), nil
}

func main() {}
