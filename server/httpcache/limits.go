package httpcache

import (
	"net/http"
	"strconv"
)

// RetryAfter is the Retry-After, in seconds, of a 503 answered when too
// many uploads or renders are in progress.
const RetryAfter = 5

// inFlight bounds the requests of one kind in progress; a nil inFlight
// bounds nothing.
type inFlight struct {
	slots chan struct{}
	what  string
}

// newInFlight returns a bound of max requests (nil when max <= 0).
func newInFlight(max int, what string) *inFlight {
	if max <= 0 {
		return nil
	}
	return &inFlight{slots: make(chan struct{}, max), what: what}
}

// limit serves next while a slot is free, and answers 503 with
// Retry-After otherwise, without waiting.
func (f *inFlight) limit(next http.HandlerFunc) http.HandlerFunc {
	if f == nil {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case f.slots <- struct{}{}:
		default:
			w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
			http.Error(w, "too many "+f.what+" in progress, retry later", http.StatusServiceUnavailable)
			return
		}
		defer func() { <-f.slots }()
		next(w, r)
	}
}
