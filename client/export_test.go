package client

import (
	"testing"
	"time"
)

// SetHeldLimits sets the memory budget of the frames a pull holds and the
// bytes it imports at once, until the test ends.
func SetHeldLimits(t testing.TB, budget, batch int64) {
	oldBudget, oldBatch := heldBudget, importBatch
	heldBudget, importBatch = budget, batch
	t.Cleanup(func() { heldBudget, importBatch = oldBudget, oldBatch })
}

// SetHeldDone has each pull report, until the test ends, the most decoded
// bytes its held frames took at once and the frames it dropped before
// their chunks were written.
func SetHeldDone(t testing.TB, fn func(peak int64, droppedLive int)) {
	heldDone = fn
	t.Cleanup(func() { heldDone = nil })
}

// SetListingFresh sets how long a listing of the upstream's paths answers
// for NAR hashes, until the test ends.
func SetListingFresh(t testing.TB, d time.Duration) {
	old := listingFresh
	listingFresh = d
	t.Cleanup(func() { listingFresh = old })
}
