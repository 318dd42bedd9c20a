// hello: operation main answers "Hello, <payload>!" ("Hello, World!" for an empty payload);
// operation log sends the payload to the host's log (console_log) and answers "logged".
package main

import "assemblex/guests/guest"

func init() {
	guest.Register("main", hello)
	guest.Register("log", logPayload)
}

func hello(payload []byte) ([]byte, error) {
	name := payload
	if len(name) == 0 {
		name = []byte("World")
	}
	out := make([]byte, 0, len(name)+8)
	out = append(out, "Hello, "...)
	out = append(out, name...)
	return append(out, '!'), nil
}

func logPayload(payload []byte) ([]byte, error) {
	guest.ConsoleLog(string(payload))
	return []byte("logged"), nil
}

func main() {}
