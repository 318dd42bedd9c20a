// redis3: operation main GETs some_key1..some_key3 through the host's redis namespace and
// answers the three values joined, as in the original benchmark. A failed host call is the
// guest's error.
package main

import "assemblex/guests/guest"

func init() {
	guest.Register("main", redis3)
}

var keys = [...]string{"some_key1", "some_key2", "some_key3"}

func redis3(_ []byte) ([]byte, error) {
	var out []byte
	for _, key := range keys {
		value, err := guest.HostCall("", "redis", "GET", []byte(key))
		if err != nil {
			return nil, err
		}
		out = append(out, value...)
	}
	return out, nil
}

func main() {}
