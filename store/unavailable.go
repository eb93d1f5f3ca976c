package store

import "errors"

// ErrUnavailable is wrapped by the errors of an index that reads from
// another server (a proxy's upstream) when that server could not be
// reached or did not answer in time: the path may exist there, but is
// not known now.
var ErrUnavailable = errors.New("store: upstream unavailable")
