package client

import "testing"

// SetHeldLimits sets the memory budget of the frames a pull holds and the
// bytes it imports at once, until the test ends.
func SetHeldLimits(t testing.TB, budget, batch int64) {
	oldBudget, oldBatch := heldBudget, importBatch
	heldBudget, importBatch = budget, batch
	t.Cleanup(func() { heldBudget, importBatch = oldBudget, oldBatch })
}
