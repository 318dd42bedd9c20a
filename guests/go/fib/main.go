// fib: operation main, payload ASCII decimal n, answers fib(n) computed the slow recursive way.
package main

import (
	"errors"
	"strconv"
	"strings"

	"assemblex/guests/guest"
)

func init() {
	guest.Register("main", fibHandler)
}

func fib(n uint64) uint64 {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

func fibHandler(payload []byte) ([]byte, error) {
	text := string(payload)
	n, err := strconv.ParseUint(strings.TrimSpace(text), 10, 64)
	if err != nil {
		return nil, errors.New("invalid number: " + text)
	}
	return strconv.AppendUint(nil, fib(n), 10), nil
}

func main() {}
