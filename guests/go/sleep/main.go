// sleep: operation main, payload ASCII decimal milliseconds, sleeps that long with time.Sleep
// (WASI poll_oneoff with a clock subscription) and answers "slept <ms>ms".
package main

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"assemblex/guests/guest"
)

func init() {
	guest.Register("main", sleep)
}

func sleep(payload []byte) ([]byte, error) {
	text := strings.TrimSpace(string(payload))
	ms, err := strconv.ParseUint(text, 10, 32)
	if err != nil {
		return nil, errors.New("invalid number of milliseconds: " + text)
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return []byte("slept " + text + "ms"), nil
}

func main() {}
