package config

import (
	"cmp"
	"strconv"
	"time"
)

// environment is the getenv Load reads through: only the variables of
// Variables, an unset or empty one as its Default, so that a default is
// parsed and checked by the code that parses a set value.
type environment func(string) string

// get returns the value of name, or its default.
func (e environment) get(name string) string {
	v, ok := variable(name)
	if !ok {
		// A programming error, found by the test that runs Load with every
		// variable set: an undocumented variable is the drift it prevents.
		panic("config: Load reads " + name + ", which is not in Variables: add its row")
	}
	return cmp.Or(e(name), v.Default)
}

// positiveDuration parses name as a duration greater than zero. example
// is a good value for the error to show.
func (e environment) positiveDuration(name, example string) (time.Duration, error) {
	v := e.get(name)
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, Errorf(name, "%q is not a positive duration (e.g. %s)", v, example)
	}
	return d, nil
}

// nonNegativeDuration parses name as a duration of zero or more.
func (e environment) nonNegativeDuration(name, example string) (time.Duration, error) {
	v := e.get(name)
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, Errorf(name, "%q is not a non-negative duration (e.g. %s)", v, example)
	}
	return d, nil
}

// count parses name as a positive whole number that fits an int32, or
// returns 0 when it is unset and has no default. example is a good value
// for the error to show.
func (e environment) count(name, example string) (int, error) {
	v := e.get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n < 1 {
		return 0, Errorf(name, "%q is not a positive whole number (e.g. %s)", v, example)
	}
	return int(n), nil
}
