package httpcache

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// RetryAfter is the Retry-After, in seconds, of a 503 answered when too
// many uploads or renders are in progress.
const RetryAfter = 5

// inFlight counts the requests of one kind in progress, and bounds them
// when it has slots.
type inFlight struct {
	slots chan struct{} // nil: no bound
	what  string
	n     prometheus.Gauge
}

// newInFlight returns a count of requests, what they are for the 503's
// message, bounded at max (no bound when max <= 0), reported in n.
func newInFlight(max int, what string, n prometheus.Gauge) *inFlight {
	f := &inFlight{what: what, n: n}
	if max > 0 {
		f.slots = make(chan struct{}, max)
	}
	return f
}

// limit serves next while a slot is free, and answers 503 with
// Retry-After otherwise, without waiting. The request counts as in
// progress until next returns.
func (f *inFlight) limit(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if f.slots != nil {
			select {
			case f.slots <- struct{}{}:
				defer func() { <-f.slots }()
			default:
				w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
				http.Error(w, "too many "+f.what+" in progress, retry later", http.StatusServiceUnavailable)
				return
			}
		}
		f.n.Inc()
		defer f.n.Dec()
		next(w, r)
	}
}
