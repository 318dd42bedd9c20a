// counter: a counter actor through the host's actor namespace. increment (and alarm, which
// an alarm calls) adds one to the stored count and to a count kept in memory, answering
// "<stored> <memory>"; get answers the same without changing anything; key answers the
// actor's key; set_alarm (payload = ASCII milliseconds) and cancel_alarm answer "ok".
package main

import (
	"errors"
	"strconv"

	"assemblex/guests/guest"
)

// memory counts the increments made by this instance: it lives as long as the instance does.
var memory uint64

func init() {
	guest.Register("increment", increment)
	guest.Register("alarm", increment)
	guest.Register("get", get)
	guest.Register("key", key)
	guest.Register("set_alarm", setAlarm)
	guest.Register("cancel_alarm", cancelAlarm)
}

// stored is the stored count: ASCII decimal, empty = 0.
func stored() (uint64, error) {
	state, err := guest.ActorLoad()
	if err != nil {
		return 0, err
	}
	if len(state) == 0 {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(state), 10, 64)
	if err != nil {
		return 0, errors.New("invalid state: " + string(state))
	}
	return n, nil
}

func answer(stored uint64) []byte {
	return []byte(strconv.FormatUint(stored, 10) + " " + strconv.FormatUint(memory, 10))
}

func increment(payload []byte) ([]byte, error) {
	n, err := stored()
	if err != nil {
		return nil, err
	}
	n++
	if err := guest.ActorStore([]byte(strconv.FormatUint(n, 10))); err != nil {
		return nil, err
	}
	memory++
	return answer(n), nil
}

func get(payload []byte) ([]byte, error) {
	n, err := stored()
	if err != nil {
		return nil, err
	}
	return answer(n), nil
}

func key(payload []byte) ([]byte, error) {
	k, err := guest.ActorKey()
	if err != nil {
		return nil, err
	}
	return []byte(k), nil
}

func setAlarm(payload []byte) ([]byte, error) {
	ms, err := strconv.ParseUint(string(payload), 10, 64)
	if err != nil {
		return nil, errors.New("invalid number of milliseconds: " + string(payload))
	}
	if err := guest.ActorAlarm(ms); err != nil {
		return nil, err
	}
	return []byte("ok"), nil
}

func cancelAlarm(payload []byte) ([]byte, error) {
	if err := guest.ActorCancel(); err != nil {
		return nil, err
	}
	return []byte("ok"), nil
}

func main() {}
